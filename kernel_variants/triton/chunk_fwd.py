"""Forward chunk kernels of EDA in Triton (docs: EDA_MATH.md, "Chunked form").

A chunk of ``BT`` tokens is ``NR = 2 * BT`` micro-rows (erase row, write row per token). The
interleaved rows live only in registers: kappa is loaded from ``e`` (even rows) and ``k`` (odd
rows) of the [B, T, H, K] inputs; values of erase rows are never loaded; the decay is read only
at erase rows. Three kernels:

* ``eda_fwd_wu_kernel`` (parallel over chunks): A = diag(b) strict_lower(kappa kappa^T * decay),
  Tm = (I + A)^-1 (two diagonal blocks by repeated squaring of the nilpotent -A, one
  off-diagonal block by products), W = Tm diag(b e^G) kappa, U = Tm diag(b) nu.
* ``eda_fwd_h_kernel`` (sequential over the chunks of one sequence, parallel over heads and V
  tiles): stores the state entering each chunk and the new values Delta = U - W S.
* ``eda_fwd_o_kernel`` (parallel over chunks and V tiles): O = (Q e^G) S + (Q kappa^T * decay * M) Delta.

Scratch tensors are laid out [B, H, NC, rows, D] (``NC`` chunks per batch row; with cu_seqlens
B = 1 and the chunks of all sequences follow each other), the layout of the PyTorch chunked form.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _chunk_coords(i_tg, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN: tl.constexpr):
    """(local chunk index, first token, sequence length) of global chunk ``i_tg``."""
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_tg * 2).to(tl.int32)
        i_t = tl.load(chunk_indices + i_tg * 2 + 1).to(tl.int32)
        bos = tl.load(cu_seqlens + i_n).to(tl.int32)
        L = tl.load(cu_seqlens + i_n + 1).to(tl.int32) - bos
    else:
        i_t = i_tg
        bos = i_b * T
        L = T
    # int64 token offsets: B * T * H * K may pass 2^31 (lengths stay int32)
    return i_t, bos.to(tl.int64), L


@triton.jit
def _seq_coords(i_n, i_h, i_nh, T, NCT, cu_seqlens, chunk_offsets, IS_VARLEN: tl.constexpr):
    """(first token (int64), length, first chunk in the scratch layout) of sequence ``i_n`` for
    the kernels that walk one sequence's chunks in order."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int32)
        L = tl.load(cu_seqlens + i_n + 1).to(tl.int32) - bos
        sc0 = i_h.to(tl.int64) * NCT + tl.load(chunk_offsets + i_n).to(tl.int64)
    else:
        bos = i_n * T
        L = T
        sc0 = i_nh.to(tl.int64) * NCT
    return bos.to(tl.int64), L, sc0


@triton.jit
def _pair_slot(i_n, i_h, i_nh, NC2, pair_offsets, IS_VARLEN: tl.constexpr):
    """First slot of sequence ``i_n``, head ``i_h`` in a per-pair-of-chunks layout [.., NC2, K, V]
    (the backward's ``bwd_states: pairs``; chunk t of the sequence is in slot ``+ t // 2``)."""
    if IS_VARLEN:
        return i_h.to(tl.int64) * NC2 + tl.load(pair_offsets + i_n).to(tl.int64)
    return i_nh.to(tl.int64) * NC2


@triton.jit
def _load_kappa(k, e, tok, i_h, ev, m_r, o_k, m_k, H: tl.constexpr, K: tl.constexpr):
    """Rows of kappa [NR, BK]: e at even (erase) rows, k at odd (write) rows."""
    p = (tok * H + i_h)[:, None] * K + o_k[None, :]
    b_e = tl.load(e + p, mask=(m_r & ev)[:, None] & m_k[None, :], other=0.)
    b_k = tl.load(k + p, mask=(m_r & (~ev))[:, None] & m_k[None, :], other=0.)
    return b_e + b_k


@triton.jit
def _row_decay(g, tok, i_h, ev, m_r, H: tl.constexpr):
    """Cumulative log decay G of the rows (decay only at erase rows) and the chunk's total."""
    b_g = tl.load(g + tok * H + i_h, mask=m_r & ev, other=0.).to(tl.float32)
    return tl.cumsum(b_g, axis=0), tl.sum(b_g, axis=0)


@triton.jit
def _unit_lower_inverse(b_A, o_h, LOG2N: tl.constexpr, PREC: tl.constexpr):
    """(I + A)^-1 for strictly lower A [NH, NH]: prod_i (I + (-A)^(2^i)) (-A is nilpotent)."""
    b_P = -b_A
    b_R = tl.where(o_h[:, None] == o_h[None, :], 1., 0.) + b_P
    for _ in tl.static_range(LOG2N - 1):
        b_P = tl.dot(b_P, b_P, input_precision=PREC)
        b_R = b_R + tl.dot(b_R, b_P, input_precision=PREC)
    return b_R


@triton.jit
def eda_fwd_wu_kernel(
    k, e, v, g, beta, gamma, w, u, cu_seqlens, chunk_indices, T, NCT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, LOG2N: tl.constexpr, USE_G: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, DT: tl.constexpr, tm=None, USE_TM: tl.constexpr = False,
    STORE_U: tl.constexpr = True,
):
    """W and U of one chunk. The 2*BT rows are split in two halves of BT rows (BT/2 tokens):
    Tm = [[R11, 0], [R21, R22]] with R11, R22 the inverses of the diagonal blocks (repeated
    squaring on BT x BT, LOG2N = log2(BT)) and R21 = -R22 A21 R11: a quarter of the work of
    squaring the whole 2BT x 2BT block.

    USE_TM (the backward's recompute, config ``bwd_tm``): the three blocks are read from the
    forward's chunk inverse ``tm`` (``eda_fwd_tm_kernel``, erase-first row order) instead.
    STORE_U false: W alone (config ``bwd_h: tm``, where the states kernel forms Delta from Tm)."""
    i_tg, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_t, bos, L = _chunk_coords(i_tg, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN)
    sc = i_bh.to(tl.int64) * NCT + i_tg
    NR: tl.constexpr = 2 * BT
    NH: tl.constexpr = BT
    o_h = tl.arange(0, NH)
    ev = (o_h % 2) == 0
    t1 = i_t * BT + o_h // 2
    t2 = t1 + BT // 2
    m1 = t1 < L
    m2 = t2 < L
    tok1 = bos + t1
    tok2 = bos + t2
    b_b1 = tl.where(ev, tl.load(gamma + tok1 * H + i_h, mask=m1, other=0.),
                    tl.load(beta + tok1 * H + i_h, mask=m1, other=0.)).to(tl.float32)
    b_b2 = tl.where(ev, tl.load(gamma + tok2 * H + i_h, mask=m2, other=0.),
                    tl.load(beta + tok2 * H + i_h, mask=m2, other=0.)).to(tl.float32)

    if USE_G:
        b_G1, b_g1 = _row_decay(g, tok1, i_h, ev, m1, H)
        b_G2, _ = _row_decay(g, tok2, i_h, ev, m2, H)
        b_G2 = b_G2 + b_g1
        b_bg1 = b_b1 * tl.exp(b_G1)
        b_bg2 = b_b2 * tl.exp(b_G2)
    else:
        b_bg1 = b_b1
        b_bg2 = b_b2
    if USE_TM:
        # row i of a half is token i // 2's erase (even i) or write row: row i // 2 or BT + i // 2
        # of the erase-first order
        p1 = o_h // 2 + tl.where(ev, 0, BT)
        p2 = p1 + BT // 2
        p_tm = tm + sc * NR * NR
        b_R11 = tl.load(p_tm + p1[:, None] * NR + p1[None, :]).to(DT)
        b_R21 = tl.load(p_tm + p2[:, None] * NR + p1[None, :]).to(DT)
        b_R22 = tl.load(p_tm + p2[:, None] * NR + p2[None, :]).to(DT)
    else:
        b_A11 = tl.zeros([NH, NH], dtype=tl.float32)
        b_A21 = tl.zeros([NH, NH], dtype=tl.float32)
        b_A22 = tl.zeros([NH, NH], dtype=tl.float32)
        for i_k in range(tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            m_k = o_k < K
            b_k1 = _load_kappa(k, e, tok1, i_h, ev, m1, o_k, m_k, H, K).to(DT)
            b_k2 = _load_kappa(k, e, tok2, i_h, ev, m2, o_k, m_k, H, K).to(DT)
            b_A11 += tl.dot(b_k1, tl.trans(b_k1), input_precision=PREC)
            b_A21 += tl.dot(b_k2, tl.trans(b_k1), input_precision=PREC)
            b_A22 += tl.dot(b_k2, tl.trans(b_k2), input_precision=PREC)
        m_A = o_h[:, None] > o_h[None, :]
        if USE_G:
            b_A11 = b_A11 * tl.exp(tl.where(m_A, b_G1[:, None] - b_G1[None, :], 0.))
            b_A22 = b_A22 * tl.exp(tl.where(m_A, b_G2[:, None] - b_G2[None, :], 0.))
            # every row of the second half comes after every row of the first: G2 - G1 <= 0
            b_A21 = b_A21 * tl.exp(b_G2[:, None] - b_G1[None, :])
        b_A11 = tl.where(m_A, b_A11 * b_b1[:, None], 0.)
        b_A22 = tl.where(m_A, b_A22 * b_b2[:, None], 0.)
        b_A21 = b_A21 * b_b2[:, None]

        b_R11 = _unit_lower_inverse(b_A11, o_h, LOG2N, PREC)
        b_R22 = _unit_lower_inverse(b_A22, o_h, LOG2N, PREC)
        b_R21 = -tl.dot(tl.dot(b_R22, b_A21, input_precision=PREC), b_R11, input_precision=PREC)
        b_R11 = b_R11.to(DT)
        b_R21 = b_R21.to(DT)
        b_R22 = b_R22.to(DT)

    p_r1 = (sc * NR + o_h)[:, None]
    p_r2 = (sc * NR + NH + o_h)[:, None]
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_k1 = _load_kappa(k, e, tok1, i_h, ev, m1, o_k, m_k, H, K)
        b_k2 = _load_kappa(k, e, tok2, i_h, ev, m2, o_k, m_k, H, K)
        b_k1 = (b_k1 * b_bg1[:, None]).to(DT)
        b_k2 = (b_k2 * b_bg2[:, None]).to(DT)
        b_w1 = tl.dot(b_R11, b_k1, input_precision=PREC)
        b_w2 = tl.dot(b_R21, b_k1, input_precision=PREC) + tl.dot(b_R22, b_k2, input_precision=PREC)
        tl.store(w + p_r1 * K + o_k[None, :], b_w1.to(w.dtype.element_ty), mask=m_k[None, :])
        tl.store(w + p_r2 * K + o_k[None, :], b_w2.to(w.dtype.element_ty), mask=m_k[None, :])
    if STORE_U:
        for i_v in range(tl.cdiv(V, BV)):
            o_v = i_v * BV + tl.arange(0, BV)
            m_v = o_v < V
            # erase rows carry no value: only odd rows are loaded
            b_n1 = tl.load(v + (tok1 * H + i_h)[:, None] * V + o_v[None, :],
                           mask=(m1 & (~ev))[:, None] & m_v[None, :], other=0.)
            b_n2 = tl.load(v + (tok2 * H + i_h)[:, None] * V + o_v[None, :],
                           mask=(m2 & (~ev))[:, None] & m_v[None, :], other=0.)
            b_n1 = (b_n1 * b_b1[:, None]).to(DT)
            b_n2 = (b_n2 * b_b2[:, None]).to(DT)
            b_u1 = tl.dot(b_R11, b_n1, input_precision=PREC)
            b_u2 = tl.dot(b_R21, b_n1, input_precision=PREC) + tl.dot(b_R22, b_n2, input_precision=PREC)
            tl.store(u + p_r1 * V + o_v[None, :], b_u1.to(u.dtype.element_ty), mask=m_v[None, :])
            tl.store(u + p_r2 * V + o_v[None, :], b_u2.to(u.dtype.element_ty), mask=m_v[None, :])


@triton.jit
def eda_fwd_h_kernel(
    q, k, e, g, w, u, kd, dec, h, vn, h0, ht, o, scale, cu_seqlens, chunk_offsets, T, NCT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, USE_KD: tl.constexpr, STORE_H: tl.constexpr,
    STORE_VN: tl.constexpr, FUSE_O: tl.constexpr, USE_H0: tl.constexpr, STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, DT: tl.constexpr, pair_offsets=None, NC2=0,
    PAIRS: tl.constexpr = False,
):
    """One (sequence, head, V tile): S [K, BV] carried through the chunks in registers.

    With USE_KD the state update reads Kd = kappa e^(G_n - G) [.., NR, K] and the chunk decay
    ``dec`` from memory (the backward's recompute), else it builds them from k, e and g.
    With FUSE_O the output of each chunk is computed here from the state in registers (no state
    or new values go through memory; the parallel output kernel is skipped).
    PAIRS (the backward's ``bwd_states: pairs``): ``h`` holds one slot per pair of chunks
    (``NC2`` per head, ``_pair_slot``) and only the even chunks' entering states are stored.
    """
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, L, sc0 = _seq_coords(i_n, i_h, i_nh, T, NCT, cu_seqlens, chunk_offsets, IS_VARLEN)
    if PAIRS:
        ps0 = _pair_slot(i_n, i_h, i_nh, NC2, pair_offsets, IS_VARLEN)
    NT = tl.cdiv(L, BT)
    NR: tl.constexpr = 2 * BT
    o_r = tl.arange(0, NR)
    ev = (o_r % 2) == 0
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_kv = o_k[:, None] * V + o_v[None, :]

    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_S += tl.load(h0 + i_nh * K * V + p_kv, mask=m_kv, other=0.).to(tl.float32)
    for i_t in range(NT):
        sc = sc0 + i_t
        if STORE_H:
            if PAIRS:
                if i_t % 2 == 0:
                    tl.store(h + (ps0 + i_t // 2) * K * V + p_kv, b_S.to(h.dtype.element_ty), mask=m_kv)
            else:
                tl.store(h + sc * K * V + p_kv, b_S.to(h.dtype.element_ty), mask=m_kv)
        p_rows = (sc * NR + o_r)[:, None]
        b_w = tl.load(w + p_rows * K + o_k[None, :], mask=m_k[None, :], other=0.)
        b_u = tl.load(u + p_rows * V + o_v[None, :], mask=m_v[None, :], other=0.)
        b_d = b_u.to(tl.float32) - tl.dot(b_w.to(DT), b_S.to(DT), input_precision=PREC)
        if STORE_VN:
            tl.store(vn + p_rows * V + o_v[None, :], b_d.to(vn.dtype.element_ty), mask=m_v[None, :])
        if USE_KD:
            b_kd = tl.load(kd + p_rows * K + o_k[None, :], mask=m_k[None, :], other=0.)
            b_dec = tl.load(dec + sc).to(tl.float32)
        else:
            t_r = i_t * BT + o_r // 2
            m_r = t_r < L
            tok = bos + t_r
            b_kap = _load_kappa(k, e, tok, i_h, ev, m_r, o_k, m_k, H, K)
            if USE_G:
                b_G, b_gl = _row_decay(g, tok, i_h, ev, m_r, H)
                b_kd = b_kap * tl.exp(b_gl - b_G)[:, None]
                b_dec = tl.exp(b_gl)
            else:
                b_kd = b_kap
                b_dec = 1.
            if FUSE_O:
                o_t = tl.arange(0, BT)
                m_t = (i_t * BT + o_t) < L
                tokq = bos + i_t * BT + o_t
                b_q = tl.load(q + (tokq * H + i_h)[:, None] * K + o_k[None, :],
                              mask=m_t[:, None] & m_k[None, :], other=0.).to(DT)
                b_o = tl.dot(b_q, b_S.to(DT), input_precision=PREC)
                b_A = tl.dot(b_q, tl.trans(b_kap.to(DT)), input_precision=PREC)
                m_A = o_r[None, :] <= 2 * o_t[:, None] + 1
                if USE_G:
                    b_gq = tl.cumsum(tl.load(g + tokq * H + i_h, mask=m_t, other=0.).to(tl.float32), axis=0)
                    b_o = b_o * tl.exp(b_gq)[:, None]
                    b_A = b_A * tl.exp(tl.where(m_A, b_gq[:, None] - b_G[None, :], 0.))
                b_A = tl.where(m_A, b_A, 0.)
                b_o += tl.dot(b_A.to(DT), b_d.to(DT), input_precision=PREC)
                tl.store(o + (tokq * H + i_h)[:, None] * V + o_v[None, :],
                         (b_o * scale).to(o.dtype.element_ty), mask=m_t[:, None] & m_v[None, :])
        b_S = b_S * b_dec + tl.dot(tl.trans(b_kd.to(DT)), b_d.to(DT), input_precision=PREC)
    if STORE_HT:
        tl.store(ht + i_nh * K * V + p_kv, b_S, mask=m_kv)


@triton.jit
def _tm_blocks(k, e, g, beta, gamma, tm, i_h, i_t, bos, L, sc, H: tl.constexpr, K: tl.constexpr,
               BT: tl.constexpr, BK: tl.constexpr, LOG2BT: tl.constexpr, USE_G: tl.constexpr,
               PREC: tl.constexpr, DT: tl.constexpr):
    """Tm of one chunk from its BT x BT blocks in the erase-first order. Every block of A is lower
    triangular (row r's token at or after column s's): A_EE, A_EK, A_KK strictly (an erase row
    follows the write of an earlier token only), A_KE with its diagonal (a token's erase row comes
    before its write row). With E = I + A_EE and the Schur complement
    S = I + A_KK - A_KE E^-1 A_EK (unit lower: A_EK is strictly lower), both inverted by the
    nilpotent product of ``_unit_lower_inverse`` on BT x BT:

        Tm = [[E^-1 + Y X, -Y S^-1], [-X, S^-1]],  X = S^-1 A_KE E^-1,  Y = E^-1 A_EK."""
    NR: tl.constexpr = 2 * BT
    o_t = tl.arange(0, BT)
    m_t = (i_t * BT + o_t) < L
    tok = bos + i_t * BT + o_t
    b_gam = tl.load(gamma + tok * H + i_h, mask=m_t, other=0.).to(tl.float32)
    b_bet = tl.load(beta + tok * H + i_h, mask=m_t, other=0.).to(tl.float32)
    b_ee = tl.zeros([BT, BT], dtype=tl.float32)
    b_ek = tl.zeros([BT, BT], dtype=tl.float32)
    b_ke = tl.zeros([BT, BT], dtype=tl.float32)
    b_kk = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_tk = m_t[:, None] & (o_k < K)[None, :]
        p = (tok * H + i_h)[:, None] * K + o_k[None, :]
        b_e = tl.load(e + p, mask=m_tk, other=0.).to(DT)
        b_k = tl.load(k + p, mask=m_tk, other=0.).to(DT)
        b_ee += tl.dot(b_e, tl.trans(b_e), input_precision=PREC)
        b_ek += tl.dot(b_e, tl.trans(b_k), input_precision=PREC)
        b_ke += tl.dot(b_k, tl.trans(b_e), input_precision=PREC)
        b_kk += tl.dot(b_k, tl.trans(b_k), input_precision=PREC)
    m_s = o_t[:, None] > o_t[None, :]
    m_l = o_t[:, None] >= o_t[None, :]
    if USE_G:
        b_G = tl.cumsum(tl.load(g + tok * H + i_h, mask=m_t, other=0.).to(tl.float32), axis=0)
        b_dec = tl.exp(tl.where(m_l, b_G[:, None] - b_G[None, :], 0.))
        b_ee = b_ee * b_dec
        b_ek = b_ek * b_dec
        b_ke = b_ke * b_dec
        b_kk = b_kk * b_dec
    b_ee = tl.where(m_s, b_ee * b_gam[:, None], 0.)
    b_ek = tl.where(m_s, b_ek * b_gam[:, None], 0.)
    b_ke = tl.where(m_l, b_ke * b_bet[:, None], 0.)
    b_kk = tl.where(m_s, b_kk * b_bet[:, None], 0.)
    b_Ei = _unit_lower_inverse(b_ee, o_t, LOG2BT, PREC)
    b_W = tl.dot(b_ke, b_Ei, input_precision=PREC)
    b_Sc = tl.where(m_s, b_kk - tl.dot(b_W, b_ek, input_precision=PREC), 0.)
    b_Si = _unit_lower_inverse(b_Sc, o_t, LOG2BT, PREC)
    b_X = tl.dot(b_Si, b_W, input_precision=PREC)
    b_Y = tl.dot(b_Ei, b_ek, input_precision=PREC)
    b_tek = -tl.dot(b_Y, b_Si, input_precision=PREC)
    b_tee = b_Ei + tl.dot(b_Y, b_X, input_precision=PREC)
    p_tm = tm + (sc * NR + o_t)[:, None] * NR + o_t[None, :]
    dt = tm.dtype.element_ty
    tl.store(p_tm, b_tee.to(dt))
    tl.store(p_tm + BT, b_tek.to(dt))
    tl.store(p_tm + BT * NR, (-b_X).to(dt))
    tl.store(p_tm + BT * NR + BT, b_Si.to(dt))


@triton.jit
def eda_fwd_tm_kernel(
    k, e, g, beta, gamma, tm, cu_seqlens, chunk_indices, T, NCT,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, LOG2N: tl.constexpr,
    USE_G: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr, DT: tl.constexpr,
    BLOCKS: tl.constexpr = False,
):
    """The chunk inverse Tm = (I + A)^-1 in the erase-first row order (config ``delta: tm``).

    Rows [0, BT) are the erase rows of the chunk's tokens (keys e, strength gamma), rows
    [BT, 2BT) the write rows (keys k, strength beta). In that order A = diag(b)(kappa kappa^T *
    e^(G_r - G_s)) restricted to pairs where row s comes before row r in the recurrence
    (token t_s < t_r, or the same token's erase row before its write row) is no longer triangular
    but still nilpotent, so (I + A)^-1 = prod_i (I + (-A)^(2^i)), LOG2N = log2(2BT) factors.
    Tm [.., 2BT, 2BT] is stored whole (zeros included) with contiguous rows; the state kernel
    ``eda_fwd_h2_kernel`` reads it in four BT x BT blocks.

    BLOCKS (config ``tm_solver: blocks``): the same inverse from its four BT x BT blocks
    (``_tm_blocks``), about a quarter of the product's multiply-adds."""
    i_tg, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_t, bos, L = _chunk_coords(i_tg, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN)
    sc = i_bh.to(tl.int64) * NCT + i_tg
    NR: tl.constexpr = 2 * BT
    if BLOCKS:
        _tm_blocks(k, e, g, beta, gamma, tm, i_h, i_t, bos, L, sc, H, K, BT, BK, LOG2N - 1, USE_G,
                   PREC, DT)
    else:
        o_r = tl.arange(0, NR)
        wr = o_r >= BT                      # write rows
        t_r = o_r % BT                      # token of the row inside the chunk
        m_r = (i_t * BT + t_r) < L
        tok = bos + i_t * BT + t_r
        b_b = tl.where(wr, tl.load(beta + tok * H + i_h, mask=m_r, other=0.),
                       tl.load(gamma + tok * H + i_h, mask=m_r, other=0.)).to(tl.float32)
        b_A = tl.zeros([NR, NR], dtype=tl.float32)
        for i_k in range(tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            m_k = o_k < K
            p = (tok * H + i_h)[:, None] * K + o_k[None, :]
            b_kap = (tl.load(e + p, mask=(m_r & (~wr))[:, None] & m_k[None, :], other=0.)
                     + tl.load(k + p, mask=(m_r & wr)[:, None] & m_k[None, :], other=0.)).to(DT)
            b_A += tl.dot(b_kap, tl.trans(b_kap), input_precision=PREC)
        # row r after row s: position 2 t + (1 if write row) in the interleaved order
        pos = 2 * t_r + wr.to(tl.int32)
        m_A = pos[:, None] > pos[None, :]
        if USE_G:
            # g of the row's token in both halves: the cumsum over 2BT rows is G_t in the first half
            # and G_t plus the chunk's total in the second
            b_g = tl.load(g + tok * H + i_h, mask=m_r, other=0.).to(tl.float32)
            b_G = tl.cumsum(b_g, axis=0)
            b_G = b_G - tl.where(wr, tl.sum(tl.where(wr, 0., b_g), axis=0), 0.)
            b_A = b_A * tl.exp(tl.where(m_A, b_G[:, None] - b_G[None, :], 0.))
        b_A = tl.where(m_A, b_A * b_b[:, None], 0.)
        b_P = -b_A
        b_R = tl.where(o_r[:, None] == o_r[None, :], 1., 0.) + b_P
        for _ in tl.static_range(LOG2N - 1):
            b_P = tl.dot(b_P, b_P, input_precision=PREC)
            b_R = b_R + tl.dot(b_R, b_P, input_precision=PREC)
        tl.store(tm + (sc * NR + o_r)[:, None] * NR + o_r[None, :], b_R.to(tm.dtype.element_ty))


@triton.jit
def _h2_loads(q, k, e, v, g, beta, gamma, tm, i_t, L, bos, i_h, sc0, o_t, o_k, m_k, o_v, H: tl.constexpr,
              K: tl.constexpr, VR: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, USE_G: tl.constexpr,
              FUSE_O: tl.constexpr, DT: tl.constexpr, PAST: tl.constexpr):
    """The inputs of chunk ``i_t`` for ``eda_fwd_h2_kernel``: e, k [BT, BK] (DT), gamma, beta [BT],
    the values [BT, BV] (float32; v has VR columns, the state's columns from VR on carry zero values,
    segmented.py's [v | 0]), the four BT x BT blocks of Tm (DT), g [BT] (raw, float32; zeros without
    a gate) and q [BT, BK] (DT; zeros without FUSE_O). PAST: ``i_t`` may be past the sequence's
    last chunk (the prefetch after it), which then loads zeros (Tm's loads masked too)."""
    NR: tl.constexpr = 2 * BT
    m_t = (i_t * BT + o_t) < L
    tok = bos + i_t * BT + o_t
    p_tk = (tok * H + i_h)[:, None] * K + o_k[None, :]
    m_tk = m_t[:, None] & m_k[None, :]
    b_e = tl.load(e + p_tk, mask=m_tk, other=0.).to(DT)
    b_k = tl.load(k + p_tk, mask=m_tk, other=0.).to(DT)
    b_gam = tl.load(gamma + tok * H + i_h, mask=m_t, other=0.).to(tl.float32)
    b_bet = tl.load(beta + tok * H + i_h, mask=m_t, other=0.).to(tl.float32)
    b_nu = tl.load(v + (tok * H + i_h)[:, None] * VR + o_v[None, :], mask=m_t[:, None] & (o_v < VR)[None, :],
                   other=0.).to(tl.float32)
    p_tm = tm + (sc0 + i_t) * NR * NR + o_t[:, None] * NR + o_t[None, :]
    if PAST:
        m_c = ((i_t * BT + 0 * o_t) < L)[:, None] & (o_t[None, :] >= 0)
        b_tee = tl.load(p_tm, mask=m_c, other=0.).to(DT)
        b_tek = tl.load(p_tm + BT, mask=m_c, other=0.).to(DT)
        b_tke = tl.load(p_tm + BT * NR, mask=m_c, other=0.).to(DT)
        b_tkk = tl.load(p_tm + BT * NR + BT, mask=m_c, other=0.).to(DT)
    else:
        b_tee = tl.load(p_tm).to(DT)
        b_tek = tl.load(p_tm + BT).to(DT)
        b_tke = tl.load(p_tm + BT * NR).to(DT)
        b_tkk = tl.load(p_tm + BT * NR + BT).to(DT)
    if USE_G:
        b_g = tl.load(g + tok * H + i_h, mask=m_t, other=0.).to(tl.float32)
    else:
        b_g = tl.zeros([BT], dtype=tl.float32)
    if FUSE_O:
        b_q = tl.load(q + p_tk, mask=m_tk, other=0.).to(DT)
    else:
        b_q = tl.zeros([BT, BK], dtype=DT)
    return b_e, b_k, b_gam, b_bet, b_nu, b_tee, b_tek, b_tke, b_tkk, b_g, b_q


@triton.jit
def eda_fwd_h2_kernel(
    q, k, e, v, g, beta, gamma, tm, h, vn, h0, ht, o, scale, cu_seqlens, chunk_offsets, T, NCT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, STORE_H: tl.constexpr, STORE_VN: tl.constexpr,
    FUSE_O: tl.constexpr, USE_H0: tl.constexpr, STORE_HT: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, DT: tl.constexpr, VR: tl.constexpr, PREFETCH: tl.constexpr = False,
    pair_offsets=None, NC2=0, PAIRS: tl.constexpr = False,
):
    """The state recurrence on the chunk inverse (config ``delta: tm``): one (sequence, head,
    V tile), S [K, BV] in registers. The chunk's rows are taken as two blocks of BT rows, the
    erase rows (keys e) and the write rows (keys k), each a plain [BT, K] load; with Tm in that
    order (``eda_fwd_tm_kernel``):

        X_E = -diag(gamma e^G) e S,   X_K = diag(beta) (v - diag(e^G) k S)
        [Delta_E; Delta_K] = Tm [X_E; X_K]
        S <- e^(G_n) S + (e e^(G_n - G))^T Delta_E + (k e^(G_n - G))^T Delta_K

    Stores the state entering each chunk (``h``) and Delta in the interleaved row order of the
    output kernel (``vn``), or with FUSE_O the output itself: O = (Q e^G) S + sum over the two
    blocks of (Q kappa^T * e^(G_i - G_j) * [j <= i]) Delta.

    PREFETCH (config ``h_prefetch``): the next chunk's inputs are loaded at the top of each step,
    before this chunk's products, and carried to the next step (``_h2_loads``).

    The backward's states recompute (config ``bwd_h: tm``) runs it with STORE_H and STORE_VN (Delta
    in float32 over the backward's U buffer); PAIRS as in ``eda_fwd_h_kernel``."""
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, L, sc0 = _seq_coords(i_n, i_h, i_nh, T, NCT, cu_seqlens, chunk_offsets, IS_VARLEN)
    if PAIRS:
        ps0 = _pair_slot(i_n, i_h, i_nh, NC2, pair_offsets, IS_VARLEN)
    NT = tl.cdiv(L, BT)
    NR: tl.constexpr = 2 * BT
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_kv = o_k[:, None] * V + o_v[None, :]
    m_c = o_t[None, :] <= o_t[:, None]

    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_S += tl.load(h0 + i_nh * K * V + p_kv, mask=m_kv, other=0.).to(tl.float32)
    if PREFETCH:
        n_e, n_k, n_gam, n_bet, n_nu, n_tee, n_tek, n_tke, n_tkk, n_g, n_q = _h2_loads(
            q, k, e, v, g, beta, gamma, tm, 0, L, bos, i_h, sc0, o_t, o_k, m_k, o_v, H, K, VR, BT, BK, USE_G,
            FUSE_O, DT, True)
    for i_t in range(NT):
        sc = sc0 + i_t
        if STORE_H:
            if PAIRS:
                if i_t % 2 == 0:
                    tl.store(h + (ps0 + i_t // 2) * K * V + p_kv, b_S.to(h.dtype.element_ty), mask=m_kv)
            else:
                tl.store(h + sc * K * V + p_kv, b_S.to(h.dtype.element_ty), mask=m_kv)
        m_t = (i_t * BT + o_t) < L
        tok = bos + i_t * BT + o_t
        if PREFETCH:
            b_e, b_k, b_gam, b_bet, b_nu = n_e, n_k, n_gam, n_bet, n_nu
            b_tee, b_tek, b_tke, b_tkk, b_graw, b_q = n_tee, n_tek, n_tke, n_tkk, n_g, n_q
            n_e, n_k, n_gam, n_bet, n_nu, n_tee, n_tek, n_tke, n_tkk, n_g, n_q = _h2_loads(
                q, k, e, v, g, beta, gamma, tm, i_t + 1, L, bos, i_h, sc0, o_t, o_k, m_k, o_v, H, K, VR, BT,
                BK, USE_G, FUSE_O, DT, True)
        else:
            b_e, b_k, b_gam, b_bet, b_nu, b_tee, b_tek, b_tke, b_tkk, b_graw, b_q = _h2_loads(
                q, k, e, v, g, beta, gamma, tm, i_t, L, bos, i_h, sc0, o_t, o_k, m_k, o_v, H, K, VR, BT,
                BK, USE_G, False, DT, False)
        b_Sd = b_S.to(DT)
        b_es = tl.dot(b_e, b_Sd, input_precision=PREC)
        b_ks = tl.dot(b_k, b_Sd, input_precision=PREC)
        if USE_G:
            b_G = tl.cumsum(b_graw, axis=0)
            b_gl = tl.sum(tl.where(o_t == BT - 1, b_G, 0.), axis=0)
            b_eG = tl.exp(b_G)
            b_xe = -(b_gam * b_eG)[:, None] * b_es
            b_xk = b_bet[:, None] * (b_nu - b_eG[:, None] * b_ks)
        else:
            b_xe = -b_gam[:, None] * b_es
            b_xk = b_bet[:, None] * (b_nu - b_ks)
        b_xe = b_xe.to(DT)
        b_xk = b_xk.to(DT)
        b_de = tl.dot(b_tee, b_xe, input_precision=PREC) + tl.dot(b_tek, b_xk, input_precision=PREC)
        b_dk = tl.dot(b_tke, b_xe, input_precision=PREC) + tl.dot(b_tkk, b_xk, input_precision=PREC)
        if STORE_VN:
            p_vn = vn + (sc * NR + 2 * o_t)[:, None] * V + o_v[None, :]
            tl.store(p_vn, b_de.to(vn.dtype.element_ty), mask=m_v[None, :])
            tl.store(p_vn + V, b_dk.to(vn.dtype.element_ty), mask=m_v[None, :])
        b_de = b_de.to(DT)
        b_dk = b_dk.to(DT)
        if FUSE_O:
            if not PREFETCH:  # q loaded here, after the chain's products, as before h_prefetch
                b_q = tl.load(q + (tok * H + i_h)[:, None] * K + o_k[None, :],
                              mask=m_t[:, None] & m_k[None, :], other=0.).to(DT)
            b_o = tl.dot(b_q, b_Sd, input_precision=PREC)
            b_ae = tl.dot(b_q, tl.trans(b_e), input_precision=PREC)
            b_ak = tl.dot(b_q, tl.trans(b_k), input_precision=PREC)
            if USE_G:
                b_o = b_o * b_eG[:, None]
                b_dec = tl.exp(tl.where(m_c, b_G[:, None] - b_G[None, :], 0.))
                b_ae = b_ae * b_dec
                b_ak = b_ak * b_dec
            b_ae = tl.where(m_c, b_ae, 0.).to(DT)
            b_ak = tl.where(m_c, b_ak, 0.).to(DT)
            b_o += tl.dot(b_ae, b_de, input_precision=PREC) + tl.dot(b_ak, b_dk, input_precision=PREC)
            tl.store(o + (tok * H + i_h)[:, None] * V + o_v[None, :], (b_o * scale).to(o.dtype.element_ty),
                     mask=m_t[:, None] & m_v[None, :])
        if USE_G:
            # rows past the sequence's end have G = G_n: their keys are zero anyway
            b_r = tl.exp(b_gl - b_G)[:, None]
            b_S = b_S * tl.exp(b_gl)
            b_S += tl.dot(tl.trans((b_e * b_r).to(DT)), b_de, input_precision=PREC)
            b_S += tl.dot(tl.trans((b_k * b_r).to(DT)), b_dk, input_precision=PREC)
        else:
            b_S += tl.dot(tl.trans(b_e), b_de, input_precision=PREC)
            b_S += tl.dot(tl.trans(b_k), b_dk, input_precision=PREC)
    if STORE_HT:
        tl.store(ht + i_nh * K * V + p_kv, b_S, mask=m_kv)


@triton.jit
def eda_fwd_o_kernel(
    q, k, e, g, h, vn, o, cu_seqlens, chunk_indices, scale, T, NCT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr,
    DT: tl.constexpr,
):
    i_v, i_tg, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_t, bos, L = _chunk_coords(i_tg, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN)
    sc = i_bh.to(tl.int64) * NCT + i_tg
    NR: tl.constexpr = 2 * BT
    o_r = tl.arange(0, NR)
    ev = (o_r % 2) == 0
    t_r = i_t * BT + o_r // 2
    m_r = t_r < L
    tok = bos + t_r
    o_t = tl.arange(0, BT)
    m_t = (i_t * BT + o_t) < L
    tokq = bos + i_t * BT + o_t
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V

    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    b_A = tl.zeros([BT, NR], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_q = tl.load(q + (tokq * H + i_h)[:, None] * K + o_k[None, :],
                      mask=m_t[:, None] & m_k[None, :], other=0.)
        b_kap = _load_kappa(k, e, tok, i_h, ev, m_r, o_k, m_k, H, K)
        b_h = tl.load(h + sc * K * V + o_k[:, None] * V + o_v[None, :],
                      mask=m_k[:, None] & m_v[None, :], other=0.)
        b_q = b_q.to(DT)
        b_o += tl.dot(b_q, b_h.to(DT), input_precision=PREC)
        b_A += tl.dot(b_q, tl.trans(b_kap.to(DT)), input_precision=PREC)
    # token i's query sees rows s <= 2i + 1: its own erase and write rows and every earlier row
    m_A = o_r[None, :] <= 2 * o_t[:, None] + 1
    if USE_G:
        b_gq = tl.load(g + tokq * H + i_h, mask=m_t, other=0.).to(tl.float32)
        b_gq = tl.cumsum(b_gq, axis=0)
        b_G, _ = _row_decay(g, tok, i_h, ev, m_r, H)
        b_o = b_o * tl.exp(b_gq)[:, None]
        b_A = b_A * tl.exp(tl.where(m_A, b_gq[:, None] - b_G[None, :], 0.))
    b_A = tl.where(m_A, b_A, 0.)
    b_vn = tl.load(vn + (sc * NR + o_r)[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0.)
    b_o += tl.dot(b_A.to(DT), b_vn.to(DT), input_precision=PREC)
    b_o = b_o * scale
    tl.store(o + (tokq * H + i_h)[:, None] * V + o_v[None, :], b_o.to(o.dtype.element_ty),
             mask=m_t[:, None] & m_v[None, :])
