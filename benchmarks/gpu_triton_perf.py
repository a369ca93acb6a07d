"""Forward variants of the Triton backend side by side on a GPU (run on the device machine).

    OUT=$OUT python3 benchmarks/gpu_triton_perf.py

Checks the ``delta: tm`` pipeline (chunk inverse stored, W and U never in memory; plain and with
the fused output) against the float64 recurrence, with fla's error on the same inputs, then times
forward configs at S1-S5 (a grid over BT, BV, fuse_o, then warps and stages around BT 16) beside
fla's gated_delta_product at S1 (same run). JSON in $OUT/triton_check.json
(the format of benchmarks/gpu_triton_check.py, whose functions this reuses); a table last.
Env: EDA_PERF_SHAPES (default S1,S2,S3,S4,S5), EDA_CHECK_FLA=0 to leave fla out.
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
    shapes = os.environ.get("EDA_PERF_SHAPES", "S1,S2,S3,S4,S5").split(",")
    bf, f32 = torch.bfloat16, torch.float32
    tm = TritonParams(delta="tm")
    tmf = TritonParams(delta="tm", fuse_o=True, BT=16)
    g.guarded(g.check, "bf16-tm", 1, 300, 16, 128, 128, bf, p=tm, grads=False, fla=fla)
    g.guarded(g.check, "bf16-tm-fused", 1, 300, 16, 128, 128, bf, p=tmf)
    g.guarded(g.check, "fp32-tm-varlen", 1, 300, 2, 64, 64, f32, p=tm, cu=[0, 7, 150, 151, 300])
    g.guarded(g.check, "bf16-tm-K256", 1, 130, 2, 256, 256, bf, p=TritonParams(delta="tm", BV=32, BT=16))
    g.guarded(g.check, "bf16-tm-nogate", 1, 200, 2, 100, 72, bf, p=tmf, gate=False)
    for s in shapes:
        g.guarded(g.time_ours, s, tag="sweep")
        grid = itertools.product((16, 32), (32, 64), (False, True))
        for BT, BV, fuse in grid:
            if s == "S5" and BV == 64 and fuse:
                continue
            g.guarded(g.time_ours, s, TritonParams(delta="tm", BT=BT, BV=BV, fuse_o=fuse), tag="sweep")
        for kw in ({"num_warps": 2}, {"num_warps": 8}, {"warps_h": 8}, {"num_stages": 3}, {"BV": 16}):
            g.guarded(g.time_ours, s, TritonParams(delta="tm", BT=16, fuse_o=s != "S4", **kw), tag="sweep")
        if fla and s in ("S1",):
            g.guarded(g.time_fla, s, "fla_gdp", "fwd")
    g.report()


if __name__ == "__main__":
    main()
