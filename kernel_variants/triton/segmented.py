"""EDA over segments of each sequence in parallel (config ``segments`` > 1) in Triton.

The method (pieces of whole chunks, their affine maps [B | A] from a pass on ``[v | 0]`` with
initial state ``[0 | I]``, the entering states by a short loop, a second pass writing the output)
is ``kernel_variants.segments``. Without gradients this backend runs it on its own kernels: the
chunk inverse (``delta: tm``) is shared by both passes, and the zero-valued columns are the state
kernel's own (``v_pad``: no [T, H, V + K] copy). With gradients, autograd runs through
``kernel_variants.segments.run_segmented`` on ``ChunkEdaFunction``.
"""

from __future__ import annotations

import torch

from kernel_variants.segments import cut, entering_states, run_segmented, segment_bounds
from kernel_variants.triton.chunk import ChunkEdaFunction, TritonParams, chunk_eda_fwd

__all__ = ["chunk_eda_segmented", "segment_bounds"]


def chunk_eda_segmented(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                        g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, scale: float,
                        h0: torch.Tensor | None, output_final_state: bool,
                        seqlens: tuple[int, ...] | None, p: TritonParams
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``chunk_eda_triton`` with each sequence cut into ``p.segments`` pieces run in parallel."""
    tensors = (q, k, v, e, g, beta, gamma, h0)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors):
        def run(qf, kf, vf, ef, gf, bf, gmf, hs, final, need_o, seg, cu):  # type: ignore[no-untyped-def]
            return ChunkEdaFunction.apply(qf, kf, vf, ef, gf, bf, gmf, scale, hs, final, cu, seg, p, need_o)

        return run_segmented(run, q, k, v, e, g, beta, gamma, h0, output_final_state, seqlens, p.segments,
                             p.BT)
    B, T, H, K = q.shape
    V = v.shape[-1]
    pc = cut(q, k, v, e, g, beta, gamma, seqlens, p.segments, p.BT)
    args = (pc.q, pc.k, pc.v, pc.e, pc.g, pc.beta, pc.gamma, scale)
    # the chunk inverse is shared by both passes; with delta tm the zero-valued columns are
    # the kernel's (v_pad), with wu they must be in memory
    cache: dict[str, torch.Tensor] = {}
    if p.delta == "tm":
        _, ht_ext = chunk_eda_fwd(*args, pc.h_ext, True, pc.cu, pc.seg, p, output=False, tm_cache=cache,
                                  v_pad=K)
    else:
        v_ext = torch.cat([pc.v, pc.v.new_zeros(1, B * T, H, K)], -1)
        _, ht_ext = chunk_eda_fwd(pc.q, pc.k, v_ext, pc.e, pc.g, pc.beta, pc.gamma, scale, pc.h_ext, True,
                                  pc.cu, pc.seg, p, output=False, tm_cache=cache)
        del v_ext
    assert ht_ext is not None
    starts, final = entering_states(ht_ext, pc.index, pc.flat, V, h0, pc.N, H, K)
    o, _ = chunk_eda_fwd(*args, starts, False, pc.cu, pc.seg, p, tm_cache=cache)
    assert o is not None
    return o.reshape(B, T, H, V), (final if output_final_state else None)
