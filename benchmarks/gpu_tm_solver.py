"""The forward's two ways of inverting I + A (``tm_solver``) side by side on a GPU (device machine).

    OUT=$OUT python3 benchmarks/gpu_tm_solver.py

First checks each solver against the float64 recurrence, forward and every gradient (the training
backward reads the forward's chunk inverse, ``bwd_tm: wu``), with fla's forward error on the same
inputs; then times, per shape of EDA_TMS_SHAPES (default S1-S5), the chunk-inverse kernel alone
(``chunk_eda_fwd(stages=1)``, num_warps 2 and 4) and the whole forward at the shape's default config
(``segments`` as the backend picks them), the two solvers alternating twice; fla's
gated_delta_product forward at S1-S4 in the same process; forward+backward at EDA_TMS_TRAIN
(default S1,S4); EDA_TMS_EXTRA: more configs, each checked then timed (below; the solvers'
checks are then left out); EDA_TMS_CHECKS=0: no checks. JSON in
$OUT/triton_check.json (gpu_triton_check.py's format); a table last.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())

import gpu_triton_check as g  # noqa: E402

from eda_tune.problem import Problem  # noqa: E402
from kernel_variants.triton.backend import TritonBackend  # noqa: E402
from kernel_variants.triton.chunk import TritonParams, chunk_eda_fwd  # noqa: E402

SOLVERS = ("doubling", "blocks")


def shape_params(shape: str, training: bool = False) -> TritonParams:
    """The backend's default config of a standard shape (as the dispatcher falls back to it)."""
    B, T, H, D = g.SHAPES[shape]
    prob = Problem(B=B, T=T, H=H, K=D, V=D, dtype="bfloat16", training=training)
    return TritonParams.from_config(TritonBackend().default_config(prob).to_dict())


def time_tm(shape: str, p: TritonParams) -> None:
    """The chunk-inverse kernel alone (the first of the forward's kernels)."""
    B, T, H, D = g.SHAPES[shape]
    d = g.inputs(B, T, H, D, D, torch.bfloat16)
    with torch.no_grad():
        ms = g.bench(lambda: chunk_eda_fwd(d["q"], d["k"], d["v"], d["e"], d["g"], d["beta"], d["gamma"],
                                           D ** -0.5, None, False, None, None, p, stages=1))
    rec = {"shape": shape, "impl": "triton", "tag": "tm_kernel", "mode": "tm", "config": p.__dict__, "ms": ms}
    g.RES["timings"].append(rec)
    g.save()
    g.log("time", rec)


def main() -> None:
    shapes = [s for s in os.environ.get("EDA_TMS_SHAPES", "S1,S2,S3,S4,S5").split(",") if s]
    train = [s for s in os.environ.get("EDA_TMS_TRAIN", "S1,S4").split(",") if s]
    bf, f32 = torch.bfloat16, torch.float32
    checks = os.environ.get("EDA_TMS_CHECKS", "1") == "1"
    for solver in SOLVERS if checks and not os.environ.get("EDA_TMS_EXTRA") else ():
        p = TritonParams(tm_solver=solver, bk_grad=128)
        g.guarded(g.check, f"bf16-H16-{solver}", 1, 300, 16, 128, 128, bf, p=p, fla=True)
        g.guarded(g.check, f"bf16-nogate-{solver}", 1, 200, 4, 100, 72, bf, p=p, gate=False)
        g.guarded(g.check, f"bf16-varlen-{solver}", 1, 300, 2, 128, 128, bf, p=p, cu=[0, 7, 150, 151, 300])
        g.guarded(g.check, f"bf16-K256-{solver}", 1, 130, 2, 256, 256, bf,
                  p=TritonParams(tm_solver=solver, BV=32, bk_grad=64))
        g.guarded(g.check, f"fp32-BT32-{solver}", 1, 200, 2, 64, 64, f32,
                  p=TritonParams(tm_solver=solver, BT=32, fuse_o=False))
    for s in shapes:
        base = shape_params(s)
        for warps in (2, 4):
            for solver in SOLVERS:
                g.guarded(time_tm, s, dataclasses.replace(base, tm_solver=solver, num_warps=warps))
        for _ in range(2):
            for solver in SOLVERS:
                g.guarded(g.time_ours, s, dataclasses.replace(base, tm_solver=solver), tag=f"fwd-{solver}")
        if s != "S5":
            g.guarded(g.time_fla, s, "fla_gdp", "fwd")
    # EDA_TMS_EXTRA="S5:num_warps=2 S1:num_warps=1": the Tm kernel and the forward at one shape's
    # default config with these fields changed (tm_solver blocks unless named)
    checked: set[str] = set()
    for item in os.environ.get("EDA_TMS_EXTRA", "").split():
        s, _, kv = item.partition(":")
        over = {k: (v in ("1", "true", "True")) if isinstance(getattr(TritonParams, k), bool)
                else type(getattr(TritonParams, k))(v) for k, v in (f.split("=") for f in kv.split(",") if f)}
        p = dataclasses.replace(shape_params(s), **over)
        if checks and kv not in checked:  # the changed fields checked first (bf16, gate, h0 and final state)
            checked.add(kv)
            g.guarded(g.check, f"extra-{kv}", 1, 300, 4, 128, 128, bf, p=TritonParams(**over), grads=False)
        g.guarded(time_tm, s, p)
        g.guarded(g.time_ours, s, p, tag=f"extra-{kv}")
    for s in train:
        base = shape_params(s, training=True)
        for solver in SOLVERS:
            g.guarded(g.time_ours, s, dataclasses.replace(base, tm_solver=solver), mode="fwdbwd",
                      tag=f"train-{solver}")
    g.report()
    print("=== by solver (ms) ===")
    rows: dict = {}
    for t in g.RES["timings"]:
        key = (t["shape"], t["mode"], t["impl"] if t["impl"] != "triton" else t["config"].get("num_warps")
               if t["mode"] == "tm" else "triton")
        rows.setdefault(key, {}).setdefault(t.get("config", {}).get("tm_solver", "-") if t["impl"] == "triton"
                                            else "-", []).append(t["ms"])
    for key, by in rows.items():
        print(key, {k: [round(x, 3) for x in v] for k, v in by.items()})


if __name__ == "__main__":
    main()
