"""The public op: ``chunk_eda`` (same layout and names as flash-linear-attention's ops)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from eda_tune.dispatch import select
from eda_tune.inputs import validate_inputs


def chunk_eda(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, g: torch.Tensor | None,
    beta: torch.Tensor, gamma: torch.Tensor, scale: float | None = None,
    initial_state: torch.Tensor | None = None, output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None, use_qk_l2norm_in_kernel: bool = False,
    backend: str | None = None, config: Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Erase-then-Delta Attention, chunked.

    Args:
        q, k, e: [B, T, H, K] query, write key, erase key.
        v: [B, T, H, V] values.
        g: [B, T, H] log decay (<= 0) or None for no decay.
        beta, gamma: [B, T, H] write and erase strengths.
        scale: query scale, default K ** -0.5.
        initial_state: [N, H, K, V] (N = B, or len(cu_seqlens) - 1), cast to float32.
        output_final_state: also return the final state [N, H, K, V] float32.
        cu_seqlens: int32/int64 [N + 1] offsets of packed sequences (needs B == 1).
        use_qk_l2norm_in_kernel: L2-normalise q, k and e inside the op.
        backend: force a backend by name; None lets the dispatcher choose.
        config: that backend's tunables (a partial mapping is completed by its default).

    Returns:
        (o [B, T, H, V] in v's dtype, final state or None).
    """
    problem, scale_f, _ = validate_inputs(q, k, v, e, g, beta, gamma, scale, initial_state,
                                          output_final_state, cu_seqlens, use_qk_l2norm_in_kernel)
    _, kernel = select(problem, backend, config)
    q, k, v, e = (x.contiguous() for x in (q, k, v, e))
    beta, gamma = beta.contiguous(), gamma.contiguous()
    g = g.contiguous() if g is not None else None
    if initial_state is not None:
        initial_state = initial_state.contiguous()
    return kernel(q, k, v, e, g, beta, gamma, scale_f, initial_state, output_final_state, cu_seqlens,
                  use_qk_l2norm_in_kernel)
