"""Backend ``triton``: the fused EDA chunk kernels of this package (search_spaces/triton.yaml)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from eda_tune.backends.base import Backend, EdaKernel
from eda_tune.problem import Config, Problem
from kernel_variants.segments import default_pieces, with_tunables


def triton_smem(BT: int, BK: int, BV: int, num_stages: int, K: int, dtype_bytes: int) -> int:
    """Rough shared-memory bytes of the parallel kernels (the dot operands Triton stages).

    The sequential state kernels are not counted: their launchers fall back to fewer stages and
    narrower V tiles when a device has too little shared memory.
    """
    NR = 2 * BT
    solve = 3 * BT * BT * 4 + num_stages * 2 * BT * BK * dtype_bytes   # W/U kernel
    out = num_stages * (BT * BK + NR * BK + BK * BV) * dtype_bytes + NR * BV * dtype_bytes + BT * NR * 4
    return max(solve, out)


def default_segments(problem: Problem, BV: int) -> int:
    """How many pieces to cut each sequence into when no tuned config says: the state recurrence
    runs one program per (sequence, head, V tile); with 64 or fewer of them and sequences of 16K
    tokens or more, cut each sequence so that about 256 programs run (at most 16 pieces). On an
    H200 this took S4 (16 programs) from 5.74 ms to 1.60 forward (16 pieces; run 11) and S2 (64
    programs) from 3.12 to 2.85 (4 pieces); forward+backward, with the backward run once over the
    pieces (segmented.py; run 41, results/bench/bwd_variants_h200_run41.json), S4 from 20.9 (uncut,
    run 11) to 6.20 and S2 from 14.28 to 11.77. S1 (256 programs) is slower cut. Training and
    inference get the same rule (before the backward over the pieces, autograd through both passes
    made training at S2 slower cut, 23.5 ms)."""
    return default_pieces(problem, BV, max_programs=64)


class TritonBackend(Backend):
    """EDA chunk kernels in Triton, forward and backward (kernel_variants/triton/NOTES.md).

    On CPU it runs only under Triton's interpreter (TRITON_INTERPRET=1): slow, for tests."""

    name = "triton"
    priority = 10
    supports_backward = True

    def is_available(self) -> tuple[bool, str]:
        try:
            import triton  # noqa: F401

            import kernel_variants.triton.chunk  # noqa: F401
        except Exception as exc:  # an import failure is reported, never fatal
            return False, f"triton kernels failed to import: {type(exc).__name__}: {exc}"
        return True, ""

    def supports(self, problem: Problem) -> tuple[bool, str]:
        ok, why = super().supports(problem)
        if not ok:
            return ok, why
        if problem.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            return False, "triton runs on CPU only under the interpreter (set TRITON_INTERPRET=1)"
        if problem.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return False, "no CUDA device"
        if problem.dtype == "float64":
            return False, "float64 is left to the torch backends (Triton dots are float32 at best)"
        if problem.K > 256 or problem.V > 256:
            return False, f"K and V must be <= 256 but got K = {problem.K}, V = {problem.V}"
        return True, ""

    def default_config(self, problem: Problem) -> Config:
        """The search space's default, with ``segments`` chosen for the problem (see
        ``default_segments``) where the space admits it, and for training the per-chunk gradients
        over K tiles (``bk_grad``: tiles of 128, or K whole below that; the space's default 0 is
        what a forward call pins). Forward+backward at S1 (K = 128): 8.50 ms with tiles of 128
        against 8.71 with 64 (H200 run 46), 8.46 against 8.67 (run 47); at S5 (K = 256) 128
        against 64 and 32: 6.561, 6.915 and 7.830 ms (run 75; 64 was the faster in run 46, before
        the backward's later changes). And for training at K > 128 ``bwd_h: tm_dh``."""
        cfg = super().default_config(problem)
        cfg = with_tunables(self, problem, cfg, segments=default_segments(problem, int(cfg["BV"])))
        bk = min(128, max(32, 1 << (problem.K - 1).bit_length()))
        cfg = with_tunables(self, problem, cfg, bk_grad=bk)
        # the dS scan from the kept chunk inverse where W is wide: S5 (K = 256) forward+backward
        # 7.765 -> 6.912 ms, S1 (K = 128) 6.953 -> 7.032 (H200 runs 70, 71)
        return with_tunables(self, problem, cfg, bwd_h="tm_dh") if problem.K > 128 else cfg

    def constraint_vars_names(self) -> list[str]:
        return ["triton_smem"]

    def constraint_vars(self, problem: Problem) -> Mapping[str, Any]:
        out: dict[str, Any] = {"triton_smem": triton_smem}
        if problem.device == "cuda":
            try:
                import torch

                if torch.cuda.is_available():
                    props = torch.cuda.get_device_properties(torch.cuda.current_device())
                    limit = getattr(props, "shared_memory_per_block_optin", 0)
                    if limit:
                        out["smem_limit"] = int(limit)
            except Exception:  # no device: keep the default limit
                pass
        return out

    def _build(self, problem: Problem, config: Config) -> EdaKernel:
        from kernel_variants.triton.chunk import TritonParams, chunk_eda_triton

        params = TritonParams.from_config(config)

        def run(q, k, v, e, g, beta, gamma, scale, initial_state, output_final_state, cu_seqlens,
                use_qk_l2norm_in_kernel):
            return chunk_eda_triton(q, k, v, e, g, beta, gamma, scale, initial_state,
                                    output_final_state, cu_seqlens, use_qk_l2norm_in_kernel, params)

        return run
