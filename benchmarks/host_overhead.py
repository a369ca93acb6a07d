"""Is a Triton call GPU-bound or host-bound? For each shape (default config of the backend, bf16,
gated): the eager time (``do_bench``, as ``eda-tune bench`` times it), the sum of the GPU kernels'
times in one call and their number (``torch.profiler``), and for the forward the time of the same
call replayed from a CUDA graph (no host work). Eager well above the kernel sum means launches
(or host syncs) set the pace. GPU only; ``$OUT/host_overhead.json`` and a table.

    HOST_SHAPES=S4,S2,S1 python3 benchmarks/host_overhead.py
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eda_tune.checking import make_inputs  # noqa: E402
from eda_tune.problem import Problem  # noqa: E402
from eda_tune.shapes import builtin_shapes  # noqa: E402
from kernel_variants.triton.backend import TritonBackend  # noqa: E402
from kernel_variants.triton.chunk import TritonParams, params_call  # noqa: E402


def kernel_profile(fn: Any) -> tuple[float, int]:
    """(sum of the GPU kernels' times in ms, number of kernels) of one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.device_time for e in kernels) / 1e3, len(kernels)


def graph_ms(fn: Any, bench: Any) -> float | str:
    """The forward replayed from a CUDA graph, or why it could not be captured."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except Exception as exc:  # a host sync or an allocation the graph cannot hold
        return f"{type(exc).__name__}: {exc}"[:200]
    return float(bench(graph.replay))


def measure(name: str, problem: Problem, bench: Any) -> dict[str, Any]:
    """One row: the default config of the backend for ``problem`` (forward, or forward+backward
    when ``problem.training``)."""
    p = TritonParams.from_config(TritonBackend().default_config(problem))
    d = make_inputs(problem, seed=0, requires_grad=problem.training)
    call = params_call(p)
    do = torch.randn_like(d["v"])
    xs = [d[n] for n in ("q", "k", "v", "e", "g", "beta", "gamma") if d[n] is not None]

    def fwd() -> None:
        with torch.no_grad():
            call(**d)

    def step() -> None:
        o, _ = call(**d)
        o.backward(do)
        for x in xs:
            x.grad = None

    fn = step if problem.training else fwd
    row: dict[str, Any] = {"shape": name, "mode": "fwd_bwd" if problem.training else "fwd",
                           "segments": p.segments, "eager_ms": bench(fn)}
    row["kernel_ms"], row["kernels"] = kernel_profile(fn)
    if not problem.training:
        row["graph_ms"] = graph_ms(fwd, bench)
    return row


def main() -> None:
    from triton.testing import do_bench

    if not torch.cuda.is_available():
        raise SystemExit("host_overhead.py needs a CUDA GPU")
    names = [s for s in os.environ.get("HOST_SHAPES", "S4,S2,S1").split(",") if s]
    shapes = {s.name: s.problem for s in builtin_shapes("standard")}
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []

    def bench(f: Any) -> float:
        return float(do_bench(f, warmup=25, rep=100, return_mode="median"))

    for name in names:
        for training in (False, True):
            problem = replace(shapes[name], dtype="bfloat16", gate=True, training=training, device="cuda")
            rows.append(measure(name, problem, bench))
            print(json.dumps(rows[-1]), flush=True)
            (out / "host_overhead.json").write_text(json.dumps(
                {"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    print(f"{'shape':6} {'mode':8} {'seg':>4} {'eager ms':>9} {'kernels ms':>11} {'n':>5} {'graph ms':>9}")
    for r in rows:
        g = r.get("graph_ms", "-")
        g = f"{g:9.3f}" if isinstance(g, float) else f"{str(g)[:9]:>9}"
        print(f"{r['shape']:6} {r['mode']:8} {r['segments']:4d} {r['eager_ms']:9.3f} {r['kernel_ms']:11.3f} "
              f"{r['kernels']:5d} {g}")


if __name__ == "__main__":
    main()
