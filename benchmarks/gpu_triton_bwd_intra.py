"""Compare the backward variants of the Triton backend on a GPU: the recurrence (config ``bwd_rec``:
split, fused), the intra-chunk kernel (``bwd_intra``: triton, triton2), tiles and warps.

    OUT=$OUT python3 benchmarks/gpu_triton_bwd_intra.py

For each variant: every gradient against the float64 reference (bf16 and fp32 tf32, small shapes,
eda_tune.checking.run_and_check), then at S1 (B=8, T=4096, H=16, K=V=128, bf16) the time of
forward+backward and of the backward's pieces (``chunk_eda_bwd_triton`` stages 2 and 3: intra =
stage 3 - stage 2), for the default config and a few neighbours. Writes $OUT/bwd_intra.json after
every step; stage 1 is the recompute, 2 - 1 the recurrence, 3 - 2 the intra-chunk part.
Without CUDA (TRITON_INTERPRET=1) only the checks run, at smaller shapes. ``BWD_TAGS`` (a comma
list of the timing tags below) times only those; ``BWD_SHAPES`` (default S1) at these standard
shapes, each variant over the backend's default config for the shape (``tag@S4@S5``: that tag
only at S4 and S5); ``BWD_CHECKS=0`` skips the checks.
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
from kernel_variants.triton.chunk import (
    TritonParams,
    chunk_eda_bwd_triton,
    chunk_eda_fwd,
    keeps_tm,
    params_call,
    scratch_override,
)

OUT = os.environ.get("OUT", "results/bench")
CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
RES: dict[str, Any] = {"card": torch.cuda.get_device_name(0) if CUDA else "cpu", "checks": [], "timings": [],
                       "errors": []}
T0 = time.time()
# B, T, H, K, V of the standard shapes (benchmarks/shapes_s1_s5.yaml)
SHAPES = {"S1": (8, 4096, 16, 128, 128), "S2": (2, 16384, 16, 128, 128), "S3": (8, 4096, 32, 64, 64),
          "S4": (1, 32768, 8, 128, 128), "S5": (4, 4096, 8, 256, 256)}


def save() -> None:
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "bwd_intra.json"), "w") as f:
        json.dump(RES, f, indent=1)


def check(name: str, problem: Problem, p: TritonParams) -> None:
    res = run_and_check(params_call(p), problem, seed=1, grads=True)
    rec = {"name": name, "config": p.__dict__, "ok": res.ok, "errors": res.errors, "reason": res.reason}
    RES["checks"].append(rec)
    save()
    print(f"[{time.time() - T0:6.1f}s] check {name} {p.bwd_intra}: ok={res.ok} max "
          f"{max(res.errors.values()):.2e} {res.reason}", flush=True)


def timing(p: TritonParams | dict[str, Any], tag: str, shape: str = "S1") -> None:
    """Forward+backward at ``shape`` (bf16, training): ``p`` is a TritonParams, or overrides of the
    backend's default config for that shape (what a training call gets, ``segments`` included)."""
    from kernel_variants.triton.backend import TritonBackend

    B, T, H, K, V = SHAPES[shape]
    problem = Problem(B=B, T=T, H=H, K=K, V=V, dtype="bfloat16", gate=True, training=True, device=DEV)
    scratch: tuple[str, ...] = ()
    if isinstance(p, dict):
        # "_scratch": buffers of the backward stored in float32 (chunk.scratch_override), for the
        # whole timing (the backward reads it when it runs)
        scratch = tuple(p.get("_scratch", ()))
        p = replace(TritonParams.from_config(TritonBackend().default_config(problem)),
                    **{k: v for k, v in p.items() if k != "_scratch"})
    with scratch_override(scratch):
        _timing(p, tag, shape, problem, B, T, H, K, V)


def _timing(p: TritonParams, tag: str, shape: str, problem: Problem, B: int, T: int, H: int, K: int,
            V: int) -> None:
    from triton.testing import do_bench

    d = make_inputs(problem, seed=0, requires_grad=True)
    xs = [d[n] for n in ("q", "k", "v", "e", "g", "beta", "gamma") if d[n] is not None]
    do = torch.randn(B, T, H, V, device=DEV, dtype=torch.bfloat16)
    fn = params_call(p)

    def step():
        o, _ = fn(**d)
        o.backward(do)

    def bench(f, **kw):
        return do_bench(f, warmup=25, rep=100, return_mode="median", **kw)
    rec: dict[str, Any] = {"shape": shape, "tag": tag, "config": p.__dict__, "fwdbwd_ms": bench(step, grad_to_none=xs)}
    a = [x.detach() for x in xs]
    if p.segments == 1:  # the pieces of the uncut backward
        # the forward's chunk inverse, which a training forward keeps for the backward (bwd_tm)
        cache: dict[str, torch.Tensor] = {}
        if keeps_tm(p):
            chunk_eda_fwd(*a[:7], K ** -0.5, None, False, None, None, p, tm_cache=cache)
        for s in (1, 2, 3):
            rec[f"bwd_ms_stages{s}"] = bench(lambda s=s: chunk_eda_bwd_triton(
                *a[:7], K ** -0.5, None, None, None, do, None, p, stages=s, tm_cache=dict(cache)))
        rec["intra_ms"] = rec["bwd_ms_stages3"] - rec["bwd_ms_stages2"]
        rec["recurrence_ms"] = rec["bwd_ms_stages2"] - rec["bwd_ms_stages1"]
    for x in xs:
        x.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    rec["peak_extra_MiB"] = (torch.cuda.max_memory_allocated() - base) / 2**20  # over inputs and do
    RES["timings"].append(rec)
    save()
    parts = (f", bwd {rec['bwd_ms_stages3']:.3f} ms (recompute {rec['bwd_ms_stages1']:.3f}, recurrence "
             f"{rec['recurrence_ms']:.3f}, intra {rec['intra_ms']:.3f})" if "intra_ms" in rec else
             f" (segments {p.segments})")
    print(f"[{time.time() - T0:6.1f}s] time {shape} {tag}: fwd+bwd {rec['fwdbwd_ms']:.3f} ms{parts}, "
          f"peak +{rec['peak_extra_MiB']:.0f} MiB", flush=True)


def guarded(f, *a) -> None:
    try:
        f(*a)
    except Exception as err:
        what = " ".join(x for x in a if isinstance(x, str))
        RES["errors"].append(f"{f.__name__} {what}: {type(err).__name__}: {err}")
        save()
        print("ERROR", f.__name__, what, type(err).__name__, err, flush=True)
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
    for name, problem in (checks.items() if os.environ.get("BWD_CHECKS", "1") != "0" else ()):
        for kw in ({}, {"bwd_rec": "fused"}, {"bwd_intra": "triton2"}, {"bwd_scratch": "half"},
                   {"bwd_intra": "fused"}, {"bwd_intra": "fused", "fused_per_sm": 1}):
            if kw.get("bwd_scratch") == "half" and problem.dtype == "float32":
                continue  # 16-bit scratch is for 16-bit inputs
            guarded(check, name, problem, replace(base, **kw))
    if not CUDA:
        return
    # the backward's pieces around the default (BT 16, bwd_rec split): recurrence variants, tiles, warps
    variants: dict[str, dict[str, Any]] = {
                "default": {}, "old_bwd": {"bv_grad": 0, "stages_grad": 0, "stages_dh": 0},
                "scratch_half": {"bwd_scratch": "half"}, "fused": {"bwd_rec": "fused"},
                "BV32": {"BV": 32}, "warps_h8": {"warps_h": 8}, "BT32": {"BT": 32, "fuse_o": False},
                "warps_bwd8": {"warps_bwd": 8}, "triton2": {"bwd_intra": "triton2"},
                # one kernel of the split backward at a time (TritonParams' per-kernel overrides)
                "dh_w8": {"warps_dh": 8}, "dh_bv32": {"bv_dh": 32},
                "grad_bv32": {"bv_grad": 32}, "grad_bv16": {"bv_grad": 16}, "grad_w8": {"warps_grad": 8},
                "grad_s1": {"stages_grad": 1}, "intra_bv32": {"bv_intra": 32}, "intra_w8": {"warps_intra": 8},
                "grad_bv32_half": {"bv_grad": 32, "bwd_scratch": "half"},
                "grad_bv32_s1": {"bv_grad": 32, "stages_grad": 1}, "grad_bv32_s3": {"bv_grad": 32, "stages_grad": 3},
                "dh_s1": {"stages_dh": 1}, "dh_s3": {"stages_dh": 3}, "intra_s1": {"stages_intra": 1},
                "intra_s3": {"stages_intra": 3}, "intra_bk32": {"bk_intra": 32}, "intra_bk128": {"bk_intra": 128},
                "grad_bv32_s1_half": {"bv_grad": 32, "stages_grad": 1, "bwd_scratch": "half"},
                "grad_bv16_s3": {"bv_grad": 16, "stages_grad": 3}, "grad_bv64_s1": {"bv_grad": 64, "stages_grad": 1},
                "grad_bv64_s3": {"bv_grad": 64, "stages_grad": 3},
                # grad and intra kernels in one persistent kernel (bwd_intra: fused): programs per
                # SM, 16-bit scratch, its pipelining stages (stages_grad) and grad V tile
                "bwdfuse": {"bwd_intra": "fused"}, "bwdfuse_ps1": {"bwd_intra": "fused", "fused_per_sm": 1},
                "bwdfuse_ps4": {"bwd_intra": "fused", "fused_per_sm": 4},
                "bwdfuse_half": {"bwd_intra": "fused", "bwd_scratch": "half"},
                "bwdfuse_s2": {"bwd_intra": "fused", "stages_grad": 2},
                "bwdfuse_s1": {"bwd_intra": "fused", "stages_grad": 1},
                "bwdfuse_bvg64": {"bwd_intra": "fused", "bv_grad": 64},
                # segments with gradients: one backward over the pieces (segmented.py), or autograd
                # through both passes (seg_bwd: autograd, how every segments config trained before)
                **{f"gk{n}": {"bk_grad": n} for n in (32, 64, 128)},
                "gk64_half": {"bk_grad": 64, "bwd_scratch": "half"}, "gk64_bv64": {"bk_grad": 64, "bv_grad": 64},
                "gk64_w8": {"bk_grad": 64, "warps_grad": 8}, "gk64_bv16": {"bk_grad": 64, "bv_grad": 16},
                "gk0": {"bk_grad": 0},
                "u32": {"_scratch": ("u",)}, "w32": {"_scratch": ("w",)},
                "all32": {"_scratch": ("w", "u", "h", "dh")}, "ilow": {"intra_dots": "half"},
                "dh32": {"dh_dots": "tf32"}, "dh_input": {"dh_dots": "input"}, "kd_rows": {"dh_dots": "kd_rows"},
                "qg_tf32": {"dh_dots": "qg_tf32"},
                "a_tf32": {"dh_dots": "a_tf32"},
                "dh32_wu32": {"dh_dots": "tf32", "wu_dots": "tf32", "_scratch": ("w",)},
                "ilow_w8_32": {"intra_dots": "half", "warps_intra": 8, "bk_intra": 32, "bv_intra": 32},
                "i_w8_32": {"warps_intra": 8, "bk_intra": 32, "bv_intra": 32},
                "gk128_ilow": {"bk_grad": 128, "intra_dots": "half"},
                "ilow_half": {"intra_dots": "half", "bwd_scratch": "half"},
                # the W/U recompute inverting I + A again instead of reading the forward's Tm
                # (bwd_tm: "wu" is the default since run 57)
                "tm_recompute": {"bwd_tm": "recompute"},
                # states and state gradients kept for every other chunk (bwd_states)
                "pairs": {"bwd_states": "pairs"},
                # the backward's two scans loading the next chunk's inputs ahead (bwd_prefetch), and
                # the forward's state kernel without it (h_prefetch, the default since run 66)
                "bpre": {"bwd_prefetch": True}, "bpre_pairs": {"bwd_prefetch": True, "bwd_states": "pairs"},
                "nohpre": {"h_prefetch": False},
                # the states and Delta recomputed from the kept Tm by the forward's state kernel
                # (bwd_h: tm; the W/U kernel writes W alone), with the dS scan loading ahead
                "bh_tm": {"bwd_h": "tm"}, "bh_tm_bpre": {"bwd_h": "tm", "bwd_prefetch": True},
                "bh_tm_pairs": {"bwd_h": "tm", "bwd_states": "pairs"},
                "bh_tm_nopre": {"bwd_h": "tm", "h_prefetch": False},
                # the dS scan forming W^T dDelta from Tm as well: no W/U kernel (bwd_h: tm_dh)
                "bh_tmdh": {"bwd_h": "tm_dh"}, "bh_tmdh_nobpre": {"bwd_h": "tm_dh", "bwd_prefetch": False},
                # the same with its product by Tm formed off the step's chain (bwd_h: tm_dhp)
                "bh_tmdhp": {"bwd_h": "tm_dhp"},
                "bh_wu": {"bwd_h": "wu"}, "nobpre": {"bwd_prefetch": False}, "intra_w2": {"warps_intra": 2},
                # fewer warps for the parallel per-chunk kernels (more programs an SM)
                "intra_w1": {"warps_intra": 1}, "intra_w4": {"warps_intra": 4}, "grad_w2": {"warps_grad": 2},
                "grad_w1": {"warps_grad": 1}, "w2both": {"warps_intra": 2, "warps_grad": 2},
                "w2_tmdh": {"warps_intra": 2, "bwd_h": "tm_dh"},
                "w2_grad8": {"warps_intra": 2, "warps_grad": 8},
                # the intra kernel's K tile and a register cap (maxnreg_intra: more programs an SM,
                # more spills; benchmarks/compile_probe.py --intra prints both)
                "intra_w2_bk32": {"bk_intra": 32}, "intra_w2_r168": {"maxnreg_intra": 168},
                "intra_w2_r128": {"maxnreg_intra": 128}, "intra_w2_bk32_r128": {"bk_intra": 32, "maxnreg_intra": 128},
                "intra_w4_r168": {"warps_intra": 4, "maxnreg_intra": 168},
                # around the K tile of 32 (bk_intra's default since run 74): 16, or 64 (before)
                "intra_bk16": {"bk_intra": 16}, "intra_bk64": {"bk_intra": 64},
                "intra_bk16_w4": {"bk_intra": 16, "warps_intra": 4},
                # the intra kernel's stages around 3 (its default since run 75), the gradient
                # kernel's K tile of 64 (the default at K > 128 before run 75) and V tile of 64
                "intra_s2": {"stages_intra": 2}, "intra_s4": {"stages_intra": 4}, "gk64_only": {"bk_grad": 64},
                "grad_bv64": {"bv_grad": 64},
                # the dS scan on V tiles of 16 (more programs: S5 has 32 sequences x heads)
                "dh_bv16": {"bv_dh": 16},
                # the W/U recompute kernel (W alone at bwd_h tm) on fewer warps
                "wu_w1": {"warps_wu": 1}, "wu_w2": {"warps_wu": 2},
                **{f"seg{n}": {"segments": n} for n in (1, 2, 4, 8, 16)},
                **{f"seg{n}_autograd": {"segments": n, "seg_bwd": "autograd"} for n in (4, 8, 16)},
                **{f"seg{n}_half": {"segments": n, "bwd_scratch": "half"} for n in (4, 8, 16)},
                **{f"seg{n}_bt32": {"segments": n, "BT": 32, "BV": 32} for n in (4, 8, 16)}}
    # a tag runs at every BWD_SHAPES shape, or only at the shapes named after it: "bwdfuse@S4@S5"
    shapes = [x for x in os.environ.get("BWD_SHAPES", "S1").split(",") if x]
    runs = []
    for item in (t for t in os.environ.get("BWD_TAGS", "").split(",") if t):
        tag, *at = item.split("@")
        runs += [(tag, shape) for shape in (at or shapes)]
    runs = runs or [(tag, shape) for shape in shapes for tag in variants]
    unknown = sorted({t for t, _ in runs} - set(variants))
    if unknown:
        raise SystemExit(f"BWD_TAGS: unknown {unknown}; known: {', '.join(variants)}")
    bad = sorted({s for _, s in runs} - set(SHAPES))
    if bad:
        raise SystemExit(f"BWD_SHAPES / BWD_TAGS: unknown shapes {bad}; known: {', '.join(SHAPES)}")
    for tag, shape in runs:  # each variant over the backend's default config for the shape
        guarded(timing, variants[tag], tag, shape)


if __name__ == "__main__":
    main()
