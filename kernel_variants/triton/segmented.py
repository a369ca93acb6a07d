"""EDA over segments of each sequence in parallel (config ``segments`` > 1) in Triton.

The method (pieces of whole chunks, their affine maps [B | A] from a pass on ``[v | 0]`` with
initial state ``[0 | I]``, the entering states by a short loop, a second pass writing the output)
is ``kernel_variants.segments``. This backend runs it on its own kernels: the chunk inverse
(``delta: tm``) is shared by both passes, and the zero-valued columns are the state kernel's own
(``v_pad``: no [T, H, V + K] copy).

With gradients (``bwd_rec: split`` and a Triton intra-chunk backward)
``kernel_variants.segments.PiecesFunction`` keeps each piece's entering state and A from the
forward; its backward is the uncut backward with the pieces as sequences: the states are
recomputed from the kept entering states, and the state-gradient scan runs twice (once for each
piece's own part, then with the gradient leaving each piece from
``kernel_variants.segments.exit_gradients``); every other kernel of the backward runs once.
Other backward configs let autograd run through the three steps
(``kernel_variants.segments.run_segmented`` on ``ChunkEdaFunction``: about three backwards).
"""

from __future__ import annotations

import torch

from kernel_variants.segments import Pieces, PiecesFunction, cut, entering_states, run_segmented, segment_bounds
from kernel_variants.triton.chunk import (
    TRITON_INTRA,
    ChunkEdaFunction,
    TritonParams,
    chunk_eda_bwd,
    chunk_eda_fwd,
    keeps_tm,
)

__all__ = ["chunk_eda_segmented", "segment_bounds"]


def _run_pieces(pc: Pieces, scale: float, h0: torch.Tensor | None, p: TritonParams, V: int,
                cache: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both passes on the packed pieces: (o [1, TT, H, V], the final states [N, H, K, V], the
    state entering each piece [NS, H, K, V] and [B | A] per piece [NS, H, K, V + K], float32).
    ``cache`` holds the chunk inverse afterwards (``delta: tm``; for the backward, ``bwd_tm``)."""
    _, TT, H, K = pc.q.shape
    args = (pc.q, pc.k, pc.v, pc.e, pc.g, pc.beta, pc.gamma, scale)
    # the chunk inverse is shared by both passes; with delta tm the zero-valued columns are
    # the kernel's (v_pad), with wu they must be in memory
    cache = {} if cache is None else cache
    if p.delta == "tm":
        _, ht_ext = chunk_eda_fwd(*args, pc.h_ext, True, pc.cu, pc.seg, p, output=False, tm_cache=cache,
                                  v_pad=K)
    else:
        v_ext = torch.cat([pc.v, pc.v.new_zeros(1, TT, H, K)], -1)
        _, ht_ext = chunk_eda_fwd(pc.q, pc.k, v_ext, pc.e, pc.g, pc.beta, pc.gamma, scale, pc.h_ext, True,
                                  pc.cu, pc.seg, p, output=False, tm_cache=cache)
        del v_ext
    assert ht_ext is not None
    starts, final = entering_states(ht_ext, pc.index, pc.flat, V, h0, pc.N, H, K)
    o, _ = chunk_eda_fwd(*args, starts, False, pc.cu, pc.seg, p, tm_cache=cache)
    assert o is not None
    return o, final, starts, ht_ext


def chunk_eda_segmented(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                        g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, scale: float,
                        h0: torch.Tensor | None, output_final_state: bool,
                        seqlens: tuple[int, ...] | None, p: TritonParams
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``chunk_eda_triton`` with each sequence cut into ``p.segments`` pieces run in parallel."""
    tensors = (q, k, v, e, g, beta, gamma, h0)
    B, T, H, K = q.shape
    V = v.shape[-1]
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors):
        if p.seg_bwd == "pieces" and p.bwd_rec == "split" and p.bwd_intra in TRITON_INTRA:
            # bwd_tm: the pieces' chunk inverse, kept from the forward for the backward (same chunks)
            kept: dict[str, torch.Tensor] = {}

            def forward(qf, kf, vf, ef, gf, bf, gmf, h0f):  # type: ignore[no-untyped-def]
                pc = cut(qf, kf, vf, ef, gf, bf, gmf, seqlens, p.segments, p.BT)
                o, final, starts, ht_ext = _run_pieces(pc, scale, h0f, p, V, kept if keeps_tm(p) else None)
                return o.reshape(B, T, H, V), final, starts, ht_ext[..., V:], pc

            def backward(qf, kf, vf, ef, gf, bf, gmf, starts, seg, cu, do, exit_grads):  # type: ignore[no-untyped-def]
                return chunk_eda_bwd(qf, kf, vf, ef, gf, bf, gmf, scale, starts, cu, seg, do, None, p,
                                     exit_grads=exit_grads, tm_cache=kept)

            o, ht = PiecesFunction.apply(forward, backward, q, k, v, e, g, beta, gamma, h0, output_final_state)
            return o, ht

        def run(qf, kf, vf, ef, gf, bf, gmf, hs, final, need_o, seg, cu):  # type: ignore[no-untyped-def]
            return ChunkEdaFunction.apply(qf, kf, vf, ef, gf, bf, gmf, scale, hs, final, cu, seg, p, need_o)

        return run_segmented(run, q, k, v, e, g, beta, gamma, h0, output_final_state, seqlens, p.segments,
                             p.BT)
    pc = cut(q, k, v, e, g, beta, gamma, seqlens, p.segments, p.BT)
    o, final, _, _ = _run_pieces(pc, scale, h0, p, V)
    return o.reshape(B, T, H, V), (final if output_final_state else None)
