"""One Triton EDA forward at S1 (bf16), run twice, for Nsight Compute (run on the device machine).

    ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \\
        -k regex:eda_ --launch-skip N --launch-count N python3 benchmarks/ncu_fwd.py [wu|tm|tmf]

The first run compiles (its launches are the ones to skip: 3 kernels for ``wu``, 3 for ``tm``,
2 for ``tmf`` = tm with the fused output); the second is the one to profile.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.getcwd())

from kernel_variants.triton.chunk import TritonParams, chunk_eda_triton  # noqa: E402

VARIANTS = {"wu": TritonParams(), "tm": TritonParams(delta="tm"),
            "tmf": TritonParams(delta="tm", fuse_o=True, warps_h=8)}


def main() -> None:
    p = VARIANTS[sys.argv[1] if len(sys.argv) > 1 else "wu"]
    B, T, H, D = 8, 4096, 16, 128
    gen = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen, device="cuda")  # noqa: E731
    q, v = r(B, T, H, D).bfloat16(), r(B, T, H, D).bfloat16()
    k, e = (torch.nn.functional.normalize(r(B, T, H, D), dim=-1).bfloat16() for _ in range(2))
    beta, gamma = torch.rand(B, T, H, device="cuda"), torch.rand(B, T, H, device="cuda")
    g = torch.nn.functional.logsigmoid(r(B, T, H)) / 16
    for _ in range(2):
        chunk_eda_triton(q, k, v, e, g, beta, gamma, D ** -0.5, None, False, None, False, p)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
