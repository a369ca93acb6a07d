"""One Triton EDA forward+backward at S1 (bf16, default config), run twice, for Nsight Compute
(run on the device machine; `NCU_S` of benchmarks/gpu_session.sh does this):

    ncu --clock-control none --section SpeedOfLight --section LaunchStats --section Occupancy \\
        --section WarpStateStats -k "regex:eda_(fwd_wu|fwd_h_|bwd)" --launch-skip 5 --launch-count 5 \\
        python3 benchmarks/ncu_bwd.py

The backward of the default config (``bwd_rec: split``) launches five kernels: the recompute
(``eda_fwd_wu_kernel``, ``eda_fwd_h_kernel``), the recurrence of dS (``eda_bwd_dh_kernel``), the
per-chunk gradients (``eda_bwd_grad_kernel``) and the intra-chunk part (``eda_bwd_intra_kernel``).
The first run compiles (its five launches are the ones to skip); the second is the one profiled.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.getcwd())

from eda_tune.checking import make_inputs  # noqa: E402
from eda_tune.problem import Problem  # noqa: E402
from kernel_variants.triton.chunk import TritonParams, chunk_eda_triton  # noqa: E402


def main() -> None:
    B, T, H, D = 8, 4096, 16, 128
    problem = Problem(B=B, T=T, H=H, K=D, V=D, dtype="bfloat16", training=True, device="cuda")
    d = make_inputs(problem, seed=0, requires_grad=True)
    do = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    p = TritonParams()
    for _ in range(2):
        o, _ = chunk_eda_triton(d["q"], d["k"], d["v"], d["e"], d["g"], d["beta"], d["gamma"], D ** -0.5,
                                None, False, None, False, p)
        o.backward(do)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
