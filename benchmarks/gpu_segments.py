"""The Triton backend's ``segments`` switch on a GPU (run on the device machine):

    OUT=$OUT python3 benchmarks/gpu_segments.py

Checks segmented configs in bf16 (forward and every gradient, varlen too) against the float64
recurrence, with fla's forward error on the same inputs; then times forward and forward+backward at
S4, S2 and S1 for segments 1 (no cut), 4, 8 and 16 beside fla's gated_delta_product in the same
process; then the peak memory of forward+backward. JSON in $OUT/triton_check.json (the format of
benchmarks/gpu_triton_check.py, whose functions this reuses); a table last.
Env: EDA_SEG_BUDGET (seconds after which no new step starts; default 480).
"""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())

import gpu_triton_check as g  # noqa: E402

from kernel_variants.triton.chunk import TritonParams  # noqa: E402

BUDGET = float(os.environ.get("EDA_SEG_BUDGET", "480"))
START = time.time()


def step(f, *a, **kw):
    if time.time() - START > BUDGET:
        g.RES["errors"].append(f"skipped (budget): {f.__name__}{a}")
        return None
    return g.guarded(f, *a, **kw)


def main() -> None:
    bf = torch.bfloat16
    d8 = TritonParams(segments=8)
    nofuse32 = dict(BT=32, BV=32, fuse_o=False, num_warps=4)
    step(g.check, "bf16-seg8", 1, 600, 4, 128, 128, bf, p=d8, fla=True)
    step(g.check, "bf16-seg4-varlen", 1, 700, 2, 128, 128, bf, p=TritonParams(segments=4),
         cu=[0, 7, 300, 301, 700])
    plans = {
        "S4": [TritonParams(), TritonParams(**nofuse32)] + [TritonParams(segments=s) for s in (4, 8, 16)]
        + [TritonParams(segments=s, **nofuse32) for s in (4, 8)],
        "S2": [TritonParams(), TritonParams(**nofuse32)] + [TritonParams(segments=s) for s in (2, 4)],
        "S1": [TritonParams(), TritonParams(segments=2)],
    }
    for shape, ps in plans.items():
        for p in ps:
            step(g.time_ours, shape, p, tag="seg")
    step(g.time_fla, "S4", "fla_gdp", "fwd")
    step(g.time_fla, "S2", "fla_gdp", "fwd")
    for p in (TritonParams(), TritonParams(segments=8), TritonParams(segments=16)):
        step(g.time_ours, "S4", p, mode="fwdbwd", tag="seg")
    step(g.time_fla, "S4", "fla_gdp", "fwdbwd")
    step(g.peak_mem, "S4", "triton", TritonParams())
    step(g.peak_mem, "S4", "triton", TritonParams(segments=8))
    step(g.peak_mem, "S4", "fla_gdp")
    step(g.peak_mem, "S1", "triton", TritonParams())
    step(g.peak_mem, "S1", "fla_gdp")
    g.report()


if __name__ == "__main__":
    main()
