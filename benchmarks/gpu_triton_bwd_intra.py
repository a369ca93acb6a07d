"""Compare the backward variants of the Triton backend on a GPU: the recurrence (config ``bwd_rec``:
split, fused), the intra-chunk kernel (``bwd_intra``: triton, triton2), tiles and warps.

    OUT=$OUT python3 benchmarks/gpu_triton_bwd_intra.py

For each variant: every gradient against the float64 reference (bf16 and fp32 tf32, small shapes,
eda_tune.checking.run_and_check), then at S1 (B=8, T=4096, H=16, K=V=128, bf16) the time of
forward+backward and of the backward's pieces (``chunk_eda_bwd_triton`` stages 2 and 3: intra =
stage 3 - stage 2), for the default config and a few neighbours. Writes $OUT/bwd_intra.json after
every step; stage 1 is the recompute, 2 - 1 the recurrence, 3 - 2 the intra-chunk part.
Without CUDA (TRITON_INTERPRET=1) only the checks run, at smaller shapes.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import replace
from typing import Any

import torch

from eda_tune.checking import make_inputs, run_and_check
from eda_tune.problem import Problem
from kernel_variants.triton.chunk import TritonParams, chunk_eda_bwd_triton, chunk_eda_triton

OUT = os.environ.get("OUT", "results/bench")
CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
RES: dict[str, Any] = {"card": torch.cuda.get_device_name(0) if CUDA else "cpu", "checks": [], "timings": [],
                       "errors": []}
T0 = time.time()
S1 = (8, 4096, 16, 128)  # B, T, H, K = V


def save() -> None:
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "bwd_intra.json"), "w") as f:
        json.dump(RES, f, indent=1)


def call(p: TritonParams):
    def fn(q, k, v, e, g, beta, gamma, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel):
        return chunk_eda_triton(q, k, v, e, g, beta, gamma, q.shape[-1] ** -0.5, initial_state,
                                output_final_state, cu_seqlens, use_qk_l2norm_in_kernel, p)
    return fn


def check(name: str, problem: Problem, p: TritonParams) -> None:
    res = run_and_check(call(p), problem, seed=1, grads=True)
    rec = {"name": name, "config": p.__dict__, "ok": res.ok, "errors": res.errors, "reason": res.reason}
    RES["checks"].append(rec)
    save()
    print(f"[{time.time() - T0:6.1f}s] check {name} {p.bwd_intra}: ok={res.ok} max "
          f"{max(res.errors.values()):.2e} {res.reason}", flush=True)


def timing(p: TritonParams, tag: str) -> None:
    from triton.testing import do_bench
    B, T, H, D = S1
    problem = Problem(B=B, T=T, H=H, K=D, V=D, dtype="bfloat16", training=True, device=DEV)
    d = make_inputs(problem, seed=0, requires_grad=True)
    xs = [d[n] for n in ("q", "k", "v", "e", "g", "beta", "gamma") if d[n] is not None]
    do = torch.randn(B, T, H, D, device=DEV, dtype=torch.bfloat16)
    fn = call(p)

    def step():
        o, _ = fn(**d)
        o.backward(do)

    def bench(f, **kw):
        return do_bench(f, warmup=25, rep=100, return_mode="median", **kw)
    rec: dict[str, Any] = {"shape": "S1", "tag": tag, "config": p.__dict__, "fwdbwd_ms": bench(step, grad_to_none=xs)}
    a = [x.detach() for x in xs]
    for s in (1, 2, 3):
        rec[f"bwd_ms_stages{s}"] = bench(lambda s=s: chunk_eda_bwd_triton(
            *a[:7], D ** -0.5, None, None, None, do, None, p, stages=s))
    for x in xs:
        x.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    rec["peak_extra_MiB"] = (torch.cuda.max_memory_allocated() - base) / 2**20  # over inputs and do
    rec["intra_ms"] = rec["bwd_ms_stages3"] - rec["bwd_ms_stages2"]
    rec["recurrence_ms"] = rec["bwd_ms_stages2"] - rec["bwd_ms_stages1"]
    RES["timings"].append(rec)
    save()
    print(f"[{time.time() - T0:6.1f}s] time {tag} {p.bwd_intra}/{p.bwd_rec}: fwd+bwd {rec['fwdbwd_ms']:.3f} ms, bwd "
          f"{rec['bwd_ms_stages3']:.3f} ms (recompute {rec['bwd_ms_stages1']:.3f}, recurrence "
          f"{rec['recurrence_ms']:.3f}, intra {rec['intra_ms']:.3f}), peak +{rec['peak_extra_MiB']:.0f} MiB",
          flush=True)


def guarded(f, *a) -> None:
    try:
        f(*a)
    except Exception as err:
        RES["errors"].append(f"{f.__name__} {a[0]}: {type(err).__name__}: {err}")
        save()
        print("ERROR", f.__name__, a[0], type(err).__name__, err, flush=True)
        traceback.print_exc(limit=3)


def main() -> None:
    T, D = (300, 128) if CUDA else (40, 32)
    checks = {
        "bf16": Problem(B=1, T=T, H=4, K=D, V=D, dtype="bfloat16", initial_state=True, final_state=True,
                        training=True, device=DEV),
        "fp32-varlen": Problem(B=1, T=T, H=2, K=D, V=D // 2, dtype="float32", num_seqs=3, initial_state=True,
                               final_state=True, training=True, device=DEV),
    }
    base = TritonParams() if CUDA else TritonParams(BT=16, BK=32, BV=16)
    for name, problem in checks.items():
        for kw in ({}, {"bwd_rec": "fused"}, {"bwd_intra": "triton2"}, {"bwd_scratch": "half"}):
            if kw.get("bwd_scratch") == "half" and problem.dtype == "float32":
                continue  # 16-bit scratch is for 16-bit inputs
            guarded(check, name, problem, replace(base, **kw))
    if not CUDA:
        return
    # the backward's pieces around the default (BT 16, bwd_rec split): recurrence variants, tiles, warps
    for tag, kw in (("default", {}), ("scratch_half", {"bwd_scratch": "half"}),
                    ("fused", {"bwd_rec": "fused"}), ("BV32", {"BV": 32}),
                    ("warps_h8", {"warps_h": 8}), ("BT32", {"BT": 32, "fuse_o": False}),
                    ("warps_bwd8", {"warps_bwd": 8}), ("triton2", {"bwd_intra": "triton2"})):
        guarded(timing, replace(TritonParams(), **kw), tag)


if __name__ == "__main__":
    main()
