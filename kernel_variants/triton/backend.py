"""Backend ``triton``: the fused EDA chunk kernels of this package (search_spaces/triton.yaml)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from eda_tune.backends.base import Backend, EdaKernel
from eda_tune.problem import Config, Problem


def triton_smem(BT: int, BK: int, BV: int, num_stages: int, K: int, dtype_bytes: int) -> int:
    """Rough shared-memory bytes of the parallel kernels (the dot operands Triton stages).

    The sequential state kernels are not counted: their launchers fall back to fewer stages and
    narrower V tiles when a device has too little shared memory.
    """
    NR = 2 * BT
    solve = 3 * BT * BT * 4 + num_stages * 2 * BT * BK * dtype_bytes   # W/U kernel
    out = num_stages * (BT * BK + NR * BK + BK * BV) * dtype_bytes + NR * BV * dtype_bytes + BT * NR * 4
    return max(solve, out)


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
