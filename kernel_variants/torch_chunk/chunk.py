"""EDA's chunked form (EDA_MATH.md, "Chunked form") written in PyTorch.

Each token is an erase micro-row (key e, value 0, strength gamma) followed by a write micro-row
(key k, value v, strength beta); a chunk of C tokens has n = 2C rows. Everything inside a chunk is
computed for all chunks at once (``intra``); only the state update runs chunk after chunk
(``step``). Autograd through both gives the backward. Math runs in float32 (float64 for float64
inputs), whatever the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from eda_tune.inputs import l2norm

SOLVERS = ("triangular", "doubling")


def unit_lower_inverse_apply(A: torch.Tensor, X: torch.Tensor, solver: str) -> torch.Tensor:
    """(I + A)^-1 X for strictly lower triangular A [..., n, n] and X [..., n, m]."""
    n = A.shape[-1]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    if solver == "triangular":
        return torch.linalg.solve_triangular(eye + A, X, upper=False, unitriangular=True)
    if solver == "doubling":
        # A is nilpotent: (I + A)^-1 = sum_j (-A)^j = prod_{i < ceil(log2 n)} (I + (-A)^(2^i))
        P = -A
        out = X + P @ X
        for _ in range(max(math.ceil(math.log2(n)) - 1, 0)):
            P = P @ P
            out = out + P @ out
        return out
    raise ValueError(f"solver must be one of {SOLVERS} but got {solver!r}")


def intra(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, gc: torch.Tensor,
          beta: torch.Tensor, gamma: torch.Tensor, solver: str
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Everything of a chunk that does not need the state, for all chunks at once.

    q, k, e [..., C, K] (q already scaled); v [..., C, V]; gc, beta, gamma [..., C] with gc the
    cumulative log decay inside the chunk. Returns W [..., 2C, K], U [..., 2C, V],
    Qg [..., C, K], Aqk [..., C, 2C], Kd [..., 2C, K] and the chunk's total decay [...].
    """
    C = q.shape[-2]
    n = 2 * C
    kappa = torch.stack((e, k), dim=-2).flatten(-3, -2)                   # [..., 2C, K]
    nu = torch.stack((torch.zeros_like(v), v), dim=-2).flatten(-3, -2)     # [..., 2C, V]
    b = torch.stack((gamma, beta), dim=-1).flatten(-2)                      # [..., 2C]
    G = gc.repeat_interleave(2, dim=-1)                                     # [..., 2C]
    rows = torch.arange(n, device=q.device)
    strict = rows[:, None] > rows[None, :]
    diff = G[..., :, None] - G[..., None, :]
    # mask before exp: above the diagonal the exponent is positive and could overflow
    decay = torch.where(strict, diff, torch.full_like(diff, -math.inf)).exp()
    A = b[..., :, None] * (kappa @ kappa.transpose(-1, -2)) * decay
    rhs = torch.cat(((b * G.exp())[..., None] * kappa, b[..., None] * nu), dim=-1)
    WU = unit_lower_inverse_apply(A, rhs, solver)
    W, U = WU[..., : kappa.shape[-1]], WU[..., kappa.shape[-1]:]
    # token i's query sees rows s <= 2i + 1 (its own erase and write rows and all before)
    seen = rows[None, :] <= 2 * torch.arange(C, device=q.device)[:, None] + 1
    qdiff = gc[..., :, None] - G[..., None, :]
    qdecay = torch.where(seen, qdiff, torch.full_like(qdiff, -math.inf)).exp()
    Aqk = (q @ kappa.transpose(-1, -2)) * qdecay
    Qg = q * gc.exp()[..., None]
    g_last = gc[..., -1]
    Kd = kappa * (g_last[..., None] - G).exp()[..., None]
    return W, U, Qg, Aqk, Kd, g_last.exp()


def step(S: torch.Tensor, W: torch.Tensor, U: torch.Tensor, Qg: torch.Tensor, Aqk: torch.Tensor,
         Kd: torch.Tensor, decay: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk: S [..., K, V] in, (o [..., C, V], S out)."""
    delta = U - W @ S
    o = Qg @ S + Aqk @ delta
    S = decay[..., None, None] * S + Kd.transpose(-1, -2) @ delta
    return o, S


@dataclass
class ChunkFns:
    """The two pieces, possibly compiled."""

    intra: Callable[..., tuple[torch.Tensor, ...]]
    step: Callable[..., tuple[torch.Tensor, torch.Tensor]]


EAGER = ChunkFns(intra=intra, step=step)


@dataclass
class ChunkLayout:
    """How [B, H, T, ...] maps to chunks [B, H, NC, C, ...] (zero padding at each sequence's end).

    Without cu_seqlens every row of the batch has NC = ceil(T / C) chunks (``index`` and
    ``ranges`` are None). With packed sequences each one is padded to whole chunks: ``index``
    holds the token of every padded position (T for padding) and ``ranges`` each sequence's chunks.
    """

    T: int
    C: int
    index: torch.Tensor | None = None
    ranges: list[tuple[int, int]] | None = None

    def chunked(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            NC = -(-self.T // self.C)
            pad = NC * self.C - self.T
            if pad:
                x = torch.nn.functional.pad(x, (0, 0, 0, pad) if x.dim() == 4 else (0, pad))
            return x.unflatten(2, (NC, self.C))
        # padding positions point at an appended zero row: they change nothing
        x = torch.cat((x, x.new_zeros(x[:, :, :1].shape)), dim=2).index_select(2, self.index)
        return x.unflatten(2, (-1, self.C))


def chunk_layout(T: int, C: int, seqlens: list[int] | tuple[int, ...] | None, device: torch.device) -> ChunkLayout:
    if seqlens is None:
        return ChunkLayout(T, C)
    idx, ranges, start = [], [], 0
    for bos, eos in zip(seqlens[:-1], seqlens[1:]):
        n_chunks = -(-(eos - bos) // C)
        pos = torch.arange(bos, bos + n_chunks * C)
        idx.append(torch.where(pos < eos, pos, torch.full_like(pos, T)))
        ranges.append((start, start + n_chunks))
        start += n_chunks
    return ChunkLayout(T, C, torch.cat(idx).to(device), ranges)


def chunk_eda_torch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, g: torch.Tensor | None,
    beta: torch.Tensor, gamma: torch.Tensor, scale: float, initial_state: torch.Tensor | None,
    output_final_state: bool, seqlens: list[int] | None, use_qk_l2norm: bool, chunk_size: int,
    solver: str, fns: ChunkFns = EAGER,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The chunked form over [B, T, H, D] inputs; differentiable. Returns (o, final state)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v, e, beta, gamma = (x.to(acc) for x in (q, k, v, e, beta, gamma))
    if use_qk_l2norm:
        q, k, e = l2norm(q), l2norm(k), l2norm(e)
    q = q * scale
    gz = g.to(acc) if g is not None else torch.zeros_like(beta)

    # [B, T, H, D] -> [B, H, T, D]; then chunked [B', H, NC, C, D]
    def heads_first(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)

    xs = [heads_first(x) for x in (q, k, v, e)]
    ss = [heads_first(x) for x in (gz, beta, gamma)]
    layout = chunk_layout(T, C, seqlens, q.device)
    ranges = layout.ranges
    qc, kc, vc, ec = (layout.chunked(x) for x in xs)
    gc, bc, gmc = (layout.chunked(x) for x in ss)
    gc = gc.cumsum(-1)
    W, U, Qg, Aqk, Kd, dec = fns.intra(qc, kc, vc, ec, gc, bc, gmc, solver)

    N = B if seqlens is None else len(seqlens) - 1
    h0 = (initial_state.to(acc) if initial_state is not None
          else q.new_zeros(N, H, K, V))
    outs: list[torch.Tensor] = []
    if ranges is None:
        S = h0
        for c in range(W.shape[2]):
            o_c, S = fns.step(S, W[:, :, c], U[:, :, c], Qg[:, :, c], Aqk[:, :, c], Kd[:, :, c], dec[:, :, c])
            outs.append(o_c)
        o = torch.stack(outs, dim=2).flatten(2, 3)[:, :, :T]
        final = S
    else:
        finals = []
        for i, (c0, c1) in enumerate(ranges):
            S = h0[i:i + 1]
            for c in range(c0, c1):
                o_c, S = fns.step(S, W[:, :, c], U[:, :, c], Qg[:, :, c], Aqk[:, :, c], Kd[:, :, c],
                                  dec[:, :, c])
                outs.append(o_c)
            finals.append(S)
        o_pad = torch.stack(outs, dim=2).flatten(2, 3)            # [1, H, NCtot*C, V]
        assert layout.index is not None
        keep = layout.index < T
        o = o_pad[:, :, keep]
        final = torch.cat(finals, dim=0)
    o = o.transpose(1, 2)
    final_out = None
    if output_final_state:
        final_out = final if acc == torch.float64 else final.to(torch.float32)
    return o, final_out
