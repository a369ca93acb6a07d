"""Where one forward+backward spends its GPU time, kernel by kernel (torch.profiler), for any
backend at standard shapes; run on the device machine (``PROF_S`` of benchmarks/gpu_session.sh):

    python3 benchmarks/profile_kernels.py --backends tilelang,triton --only S1 --json $OUT/prof.json

Each (backend, shape): two untimed steps (compilation, caches), then ``--iters`` profiled steps;
the table gives each kernel's GPU time per step (ms), its launches per step and its share of the
step's kernel time. Kernel names are cut to 60 characters in the table, kept whole in the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.getcwd())

from eda_tune.checking import make_inputs  # noqa: E402
from eda_tune.ops import chunk_eda  # noqa: E402
from eda_tune.shapes import builtin_shapes  # noqa: E402


def _step(backend: str, config: dict, d: dict, do: torch.Tensor) -> None:
    o, _ = chunk_eda(**d, backend=backend, config=config or None)
    o.backward(do)
    for x in d.values():
        if isinstance(x, torch.Tensor) and x.grad is not None:
            x.grad = None


def profile_one(problem, backend: str, config: dict, iters: int) -> dict:
    d = make_inputs(problem, seed=0, requires_grad=True)
    do = torch.randn(problem.B, problem.T, problem.H, problem.V, device=problem.device, dtype=problem.torch_dtype)
    for _ in range(2):
        _step(backend, config, d, do)
    cuda = problem.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            _step(backend, config, d, do)
        if cuda:
            torch.cuda.synchronize()
    per: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for ev in prof.events():
        if not cuda or ev.device_type == torch.autograd.DeviceType.CUDA:
            per[ev.name][0] += (ev.device_time if cuda else ev.self_cpu_time_total) / 1000.0
            per[ev.name][1] += 1
    total = sum(v[0] for v in per.values()) / iters
    rows = sorted(({"kernel": k, "ms": v[0] / iters, "launches": v[1] / iters} for k, v in per.items()),
                  key=lambda r: -r["ms"])
    for r in rows:
        r["share"] = r["ms"] / total if total else 0.0
    return {"backend": backend, "config": config, "kernel_ms_per_step": total,
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0, "kernels": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="tilelang")
    ap.add_argument("--only", default="S1", help="standard shapes, comma-separated")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--top", type=int, default=14, help="rows of the table per (backend, shape)")
    ap.add_argument("--config", action="append", default=[],
                    help="BACKEND:key=value,... a config to profile after the defaults (repeatable)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    targets: list[tuple[str, dict]] = [(name, {}) for name in a.backends.split(",") if name]
    for c in a.config:
        name, _, kv = c.partition(":")
        targets.append((name, {k: (int(v) if v.lstrip("-").isdigit() else v)
                               for k, v in (p.split("=", 1) for p in kv.split(",") if p)}))
    shapes = {s.name: s for s in builtin_shapes("standard")}
    out = []
    for sname in a.only.split(","):
        problem = dataclasses.replace(shapes[sname].problem, training=True)
        for backend, config in targets:
            try:
                r = profile_one(problem, backend, config, a.iters)
            except Exception as err:  # one failing backend must not lose the others' rows
                print(f"{sname} {backend}: FAILED {type(err).__name__}: {err}", flush=True)
                out.append({"shape": sname, "backend": backend, "error": f"{type(err).__name__}: {err}"})
                continue
            r["shape"] = sname
            out.append(r)
            print(f"\n{sname} {backend} {config or 'default'}: {r['kernel_ms_per_step']:.3f} ms of kernels "
                  f"per fwd+bwd step, peak {r['peak_mib']:.0f} MiB", flush=True)
            print(f"{'ms':>8} {'n':>4} {'share':>6}  kernel")
            for k in r["kernels"][:a.top]:
                print(f"{k['ms']:8.3f} {k['launches']:4.0f} {k['share']:6.1%}  {k['kernel'][:60]}")
    if a.json:
        with open(a.json, "w") as f:
            card = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
            json.dump({"card": card, "torch": torch.__version__, "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
