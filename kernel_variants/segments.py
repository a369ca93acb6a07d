"""Pieces of each sequence run in parallel and joined through their affine state maps (config
``segments`` > 1 of the triton and tilelang backends).

The state recurrence walks a sequence's chunks one after another: with few heads and long
sequences (S4: 8 heads, 2048 chunks of 16) only a few programs run on a GPU of 132 SMs, each a
long chain of dependent steps. EDA's state update is affine in the state,

    S_end = A S_start + B      (A [K, K] and B [K, V] per piece and head),

so each sequence is cut into ``segments`` pieces (whole chunks) and:

1. every piece runs the chunk kernels at once as its own sequence (``cu_seqlens``), on the values
   widened to ``[v | 0]`` and the initial state ``[0 | I]``: the final state of that run is
   ``[B | A]`` (the identity columns carry the piece's transition, the zero-valued columns add
   nothing);
2. a short loop over pieces (batched over sequences and heads, float32) gives the state entering
   each piece, ``S_j = A_j S_(j-1) + B_j``, and the final state;
3. every piece runs again from its entering state, now writing the output.

Three times the work of one pass, spread over ``segments`` times as many programs: it pays when
the sequential kernels leave most of the GPU idle. With gradients, ``run_segmented`` lets autograd
run through the three steps (the chunk kernels' own backward, the loop's in PyTorch). A backend
whose backward takes the pieces as sequences can do better (``PiecesFunction``, used by both
backends): the forward keeps each piece's entering state and A, the backward
recomputes from those, and its state-gradient scan needs the gradient leaving each piece, which
``exit_gradients`` gives from one scan with none (dL/dS_start = A^T dL/dS_end + the piece's own
part); a second scan with them gives the exact per-chunk gradients, so only that scan runs twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from eda_tune.backends.base import Backend
from eda_tune.problem import Config, Problem


def recurrence_programs(problem: Problem, BV: int) -> int:
    """Programs of the state recurrence uncut: one per (sequence, head, V tile of BV)."""
    return (problem.num_seqs or problem.B) * problem.H * -(-problem.V // BV)


def default_pieces(problem: Problem, BV: int, max_programs: int) -> int:
    """Pieces per sequence for a default config: the state recurrence runs one program per
    (sequence, head, V tile); with ``max_programs`` or fewer of them and sequences of 16K tokens or
    more (the mean, for varlen), cut each sequence so that about 256 programs run (at most 16
    pieces); otherwise 1. The backends' measurements are in their ``default_config``."""
    programs = recurrence_programs(problem, BV)
    length = problem.T // problem.num_seqs if problem.num_seqs else problem.T
    if programs > max_programs or length < 16384:
        return 1
    seg = 1
    while seg < 16 and programs * seg * 2 <= 256:
        seg *= 2
    return seg


def with_tunables(backend: Backend, problem: Problem, cfg: Config, **tunables: Any) -> Config:
    """``cfg`` with ``tunables`` where the backend's space admits them for ``problem``, else ``cfg``
    (the backends' problem-dependent defaults: ``segments``, triton's ``bk_grad``)."""
    if all(cfg[name] == value for name, value in tunables.items()):
        return cfg
    values = {**cfg.to_dict(), **tunables}
    return Config.from_dict(values) if backend.check_config(problem, values)[0] else cfg


def segment_bounds(bounds: tuple[int, ...], segments: int, BT: int) -> tuple[tuple[int, ...], list[int]]:
    """Cut each sequence [bounds[i], bounds[i+1]) into at most ``segments`` pieces of whole chunks
    (the last piece may be shorter). Returns the packed boundaries of every piece and the number of
    pieces per sequence (an empty sequence keeps one empty piece)."""
    out = [bounds[0]]
    counts: list[int] = []
    for bos, eos in zip(bounds[:-1], bounds[1:]):
        L = eos - bos
        chunks = -(-L // BT)
        per = max(1, -(-chunks // segments)) * BT
        cuts = list(range(bos + per, eos, per))
        out.extend(cuts)
        out.append(eos)
        counts.append(len(cuts) + 1)
    return tuple(out), counts


@functools.lru_cache(maxsize=64)
def plan(bounds: tuple[int, ...], segments: int, BT: int, device: torch.device
         ) -> tuple[tuple[int, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pieces' boundaries (and as a device tensor) and, per sequence, the index of each of its
    pieces (NS where a sequence has fewer than the most): built once per packing, then cached, so
    that a call copies nothing from the host."""
    seg, counts = segment_bounds(bounds, segments, BT)
    NS = len(seg) - 1
    index = torch.full((len(counts), max(counts)), NS, dtype=torch.long)
    start = 0
    for n, c in enumerate(counts):
        index[n, :c] = torch.arange(start, start + c)
        start += c
    flat = (index < NS).flatten().nonzero().squeeze(1)  # the real pieces in the padded [N * width]
    return seg, torch.tensor(seg, dtype=torch.int32).to(device), index.to(device), flat.to(device)


def entering_states(ht_ext: torch.Tensor, index: torch.Tensor, flat: torch.Tensor, V: int,
                    h0: torch.Tensor | None, N: int, H: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From [B | A] per piece ([NS, H, K, V + K], float32): the state entering each piece
    [NS, H, K, V] and the final state of each sequence [N, H, K, V]."""
    dev = ht_ext.device
    width = index.shape[1]
    eye = torch.eye(K, dtype=ht_ext.dtype, device=dev).expand(1, H, K, K)
    # step-major ([width, N * H, ...]): one batched multiply-add (baddbmm) a step, on contiguous slices
    A = torch.cat([ht_ext[..., V:], eye], 0)[index.t()].flatten(1, 2)                   # [width, N*H, K, K]
    Bm = torch.cat([ht_ext[..., :V], ht_ext.new_zeros(1, H, K, V)], 0)[index.t()].flatten(1, 2)
    S = h0.to(ht_ext.dtype).reshape(N * H, K, V) if h0 is not None else ht_ext.new_zeros(N * H, K, V)
    entering = []
    for j in range(width):  # padded steps (A = I, B = 0) leave S as it is
        entering.append(S)
        S = torch.baddbmm(Bm[j], A[j], S)
    starts = _piece_major(torch.stack(entering), N, H)[flat]                          # [NS, H, K, V]
    return starts, S.reshape(N, H, K, V)


def _piece_major(x: torch.Tensor, N: int, H: int) -> torch.Tensor:
    """[width, N * H, K, V] per step -> [N * width, H, K, V] in the padded piece order of ``plan``."""
    return x.unflatten(1, (N, H)).transpose(0, 1).flatten(0, 1)


def exit_gradients(enter_grads: torch.Tensor, maps: torch.Tensor, index: torch.Tensor, flat: torch.Tensor,
                   dht: torch.Tensor | None, N: int) -> torch.Tensor:
    """The backward of ``entering_states``' loop, for a backward that runs the pieces as sequences.

    ``enter_grads`` [NS, H, K, V]: the gradient each piece's own tokens give the state entering
    it (the backward's state scan with no gradient leaving the piece); ``maps`` [NS, H, K, K]: each
    piece's A. As dL/dS_start = A^T dL/dS_end + (the piece's own part), a loop from each
    sequence's last piece (leaving gradient ``dht`` [N, H, K, V], or zero) gives the gradient of
    the state leaving every piece, [NS, H, K, V] float32."""
    NS, H, K, V = enter_grads.shape
    width = index.shape[1]
    dev = enter_grads.device
    eye = torch.eye(K, dtype=torch.float32, device=dev).expand(1, H, K, K)
    At = torch.cat([maps.float().transpose(-1, -2), eye], 0)[index.t()].flatten(1, 2)    # [width, N*H, K, K]
    C = torch.cat([enter_grads.float(), enter_grads.new_zeros(1, H, K, V, dtype=torch.float32)], 0)
    C = C[index.t()].flatten(1, 2)                                                       # [width, N*H, K, V]
    G = (dht.float().reshape(N * H, K, V) if dht is not None
         else torch.zeros(N * H, K, V, dtype=torch.float32, device=dev))
    leaving = [G] * width
    for j in reversed(range(width)):  # padded steps (A = I, nothing of their own) pass G on
        leaving[j] = G
        G = torch.baddbmm(C[j], At[j], G)
    return _piece_major(torch.stack(leaving), N, H)[flat]


class Pieces(NamedTuple):
    """One call cut into pieces: the inputs packed as one sequence of B*T tokens ([1, TT, H, D]),
    the pieces' boundaries (tuple and int32 tensor), ``plan``'s index, and the first pass's
    initial state ``[0 | I]`` ([NS, H, K, V + K], float32)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    e: torch.Tensor
    g: torch.Tensor | None
    beta: torch.Tensor
    gamma: torch.Tensor
    seg: tuple[int, ...]
    cu: torch.Tensor
    index: torch.Tensor
    flat: torch.Tensor
    N: int
    h_ext: torch.Tensor


def cut(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, g: torch.Tensor | None,
        beta: torch.Tensor, gamma: torch.Tensor, seqlens: tuple[int, ...] | None, segments: int, BT: int
        ) -> Pieces:
    """Pack the inputs and plan the pieces (``seqlens``: the sequences' boundaries, or None for B
    sequences of T tokens)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    bounds = seqlens if seqlens is not None else tuple(range(0, B * T + 1, T))
    seg, cu, index, flat = plan(bounds, segments, BT, q.device)
    TT = B * T
    h_ext = torch.zeros(len(seg) - 1, H, K, V + K, dtype=torch.float32, device=q.device)
    h_ext[..., V:] = torch.eye(K, dtype=torch.float32, device=q.device)
    return Pieces(*(x.reshape(1, TT, H, x.shape[-1]) for x in (q, k, v, e)),
                  g.reshape(1, TT, H) if g is not None else None, beta.reshape(1, TT, H),
                  gamma.reshape(1, TT, H), seg, cu, index, flat, len(bounds) - 1, h_ext)


#: ``run(q, k, v, e, g, beta, gamma, h0, output_final_state, need_o, seqlens, cu_seqlens)`` on
#: packed inputs ([1, TT, H, D]): the backend's chunk op over the sequences ``seqlens`` (a tuple of
#: boundaries, and as an int32 tensor), differentiable; returns (o or None, final state or None)
PackedRun = Callable[..., tuple[torch.Tensor | None, torch.Tensor | None]]


def segmented_forward(run: PackedRun, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                      g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, h0: torch.Tensor | None,
                      seqlens: tuple[int, ...] | None, segments: int, BT: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Pieces]:
    """The three steps above through ``run`` (both passes on every piece at once): the output
    [B, T, H, V], the final states [N, H, K, V], the state entering each piece [NS, H, K, V], each
    piece's A [NS, H, K, K] and the pieces."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    p = cut(q, k, v, e, g, beta, gamma, seqlens, segments, BT)
    v_ext = torch.cat([p.v, p.v.new_zeros(1, B * T, H, K)], -1)
    _, ht_ext = run(p.q, p.k, v_ext, p.e, p.g, p.beta, p.gamma, p.h_ext, True, False, p.seg, p.cu)
    assert ht_ext is not None
    del v_ext
    starts, final = entering_states(ht_ext, p.index, p.flat, V, h0, p.N, H, K)
    o, _ = run(p.q, p.k, p.v, p.e, p.g, p.beta, p.gamma, starts, False, True, p.seg, p.cu)
    assert o is not None
    return o.reshape(B, T, H, V), final, starts, ht_ext[..., V:], p


def run_segmented(run: PackedRun, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                  g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, h0: torch.Tensor | None,
                  output_final_state: bool, seqlens: tuple[int, ...] | None, segments: int, BT: int
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``segmented_forward``'s output and final state (with a differentiable ``run``, autograd
    runs through both passes and the loop)."""
    o, final, _, _, _ = segmented_forward(run, q, k, v, e, g, beta, gamma, h0, seqlens, segments, BT)
    return o, (final if output_final_state else None)


#: ``forward(q, k, v, e, g, beta, gamma, h0)`` without gradients: ``segmented_forward``'s five
#: results (a backend may run the passes its own way)
PiecesForward = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Pieces]]
#: ``backward(q, k, v, e, g, beta, gamma, starts, seg, cu, do, exit_grads)`` on packed inputs with
#: the pieces as sequences (initial states ``starts``): the backend's backward, whose state-gradient
#: scan takes the gradients leaving the pieces from ``exit_grads`` (see ``exit_gradients``); returns
#: the packed gradients of q, k, v, e, g, beta, gamma and of each piece's initial state
PiecesBackward = Callable[..., Sequence[torch.Tensor | None]]


class PiecesFunction(torch.autograd.Function):
    """A segmented call whose backward runs once over the pieces: the forward keeps each piece's
    entering state and A (``K * (V + K)`` floats a piece and head), the backward recomputes from
    the entering states and needs only its state-gradient scan twice (module docstring)."""

    @staticmethod
    def forward(ctx: Any, forward: PiecesForward, backward: PiecesBackward, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor, e: torch.Tensor, g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor,
                h0: torch.Tensor | None, output_final_state: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        o, final, starts, maps, pc = forward(q, k, v, e, g, beta, gamma, h0)
        ctx.save_for_backward(q, k, v, e, g, beta, gamma, h0, starts, maps.contiguous())
        ctx.backward = backward
        ctx.pieces = (pc.seg, pc.cu, pc.index, pc.flat, pc.N)
        return o, (final if output_final_state else None)

    @staticmethod
    def backward(ctx: Any, do: torch.Tensor | None, dht: torch.Tensor | None) -> tuple[Any, ...]:
        q, k, v, e, g, beta, gamma, h0, starts, maps = ctx.saved_tensors
        seg, cu, index, flat, N = ctx.pieces
        B, T, H, _ = q.shape
        do = torch.zeros_like(v) if do is None else do

        def pack(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.reshape(1, B * T, H, *x.shape[3:])

        def leaving(enter_grads: torch.Tensor) -> torch.Tensor:
            return exit_gradients(enter_grads, maps, index, flat, dht, N)

        *grads, dh0p = ctx.backward(*(pack(x) for x in (q, k, v, e, g, beta, gamma)), starts, seg, cu,
                                    pack(do).contiguous(), leaving)  # type: ignore[union-attr]
        shapes = [x.shape if x is not None else None for x in (q, k, v, e, g, beta, gamma)]
        out = [gx.reshape(shp) if gx is not None and shp is not None else None for gx, shp in zip(grads, shapes)]
        dh0 = dh0p[index[:, 0]].to(h0.dtype) if h0 is not None and dh0p is not None else None
        return (None, None, *out, dh0, None)
