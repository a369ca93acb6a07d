"""Forward variants of the Triton backend side by side on a GPU (run on the device machine).

    OUT=$OUT python3 benchmarks/gpu_triton_perf.py

Checks the ``delta: tm`` pipeline (chunk inverse stored, W and U never in memory; plain and with
the fused output) against the float64 recurrence, with fla's error on the same inputs, then times
forward configs at S1 (a grid over BT, BV, fuse_o, warps_h, delta) and a few at S2-S4 beside
fla's gated_delta_product and gated_delta_rule at S1 (same run). JSON in $OUT/triton_check.json
(the format of benchmarks/gpu_triton_check.py, whose functions this reuses); a table last.
Env: EDA_PERF_SHAPES (default S1,S2,S3,S4), EDA_CHECK_FLA=0 to leave fla out.
"""

from __future__ import annotations

import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())

import gpu_triton_check as g  # noqa: E402

from kernel_variants.triton.chunk import TritonParams  # noqa: E402


def main() -> None:
    fla = os.environ.get("EDA_CHECK_FLA", "1") == "1"
    shapes = os.environ.get("EDA_PERF_SHAPES", "S1,S2,S3,S4").split(",")
    bf, f32 = torch.bfloat16, torch.float32
    tm = TritonParams(delta="tm")
    tmf = TritonParams(delta="tm", fuse_o=True)
    g.guarded(g.check, "bf16-wu", 1, 300, 16, 128, 128, bf, grads=False, fla=fla)
    g.guarded(g.check, "bf16-tm", 1, 300, 16, 128, 128, bf, p=tm, grads=False, fla=fla)
    g.guarded(g.check, "bf16-tm-fused", 1, 300, 16, 128, 128, bf, p=tmf)
    g.guarded(g.check, "fp32-tm-varlen", 1, 300, 2, 64, 64, f32, p=tm, cu=[0, 7, 150, 151, 300])
    g.guarded(g.check, "bf16-tm-K256", 1, 130, 2, 256, 256, bf, p=TritonParams(delta="tm", BV=32, BT=16))
    g.guarded(g.check, "bf16-tm-nogate", 1, 200, 2, 100, 72, bf, p=tmf, gate=False)
    if "S1" in shapes:
        g.guarded(g.time_ours, "S1")
        for BT, BV, fuse, wh in itertools.product((16, 32), (32, 64), (False, True), (4, 8)):
            g.guarded(g.time_ours, "S1", TritonParams(delta="tm", BT=BT, BV=BV, fuse_o=fuse, warps_h=wh),
                      tag="sweep")
        for kw in ({"num_warps": 8}, {"num_stages": 1}, {"num_stages": 3}):
            g.guarded(g.time_ours, "S1", TritonParams(delta="tm", fuse_o=True, warps_h=8, **kw), tag="sweep")
        if fla:
            g.guarded(g.time_fla, "S1", "fla_gdp", "fwd")
            g.guarded(g.time_fla, "S1", "fla_gdr", "fwd")
    for s in shapes:
        if s == "S1":
            continue
        g.guarded(g.time_ours, s, tag="sweep")
        for kw in ({"BV": 32}, {"BV": 16}, {"BV": 64, "fuse_o": True, "warps_h": 8},
                   {"BT": 16, "BV": 32}, {"BT": 16, "BV": 16}):
            g.guarded(g.time_ours, s, TritonParams(delta="tm", **kw), tag="sweep")
    g.guarded(g.time_ours, "S1", TritonParams(delta="tm", fuse_o=True, warps_h=8), mode="fwdbwd", tag="sweep")
    g.report()


if __name__ == "__main__":
    main()
