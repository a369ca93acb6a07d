"""Backward of the chunk state recurrence of EDA in Triton.

Per chunk (rows of the chunked form, EDA_MATH.md): Delta = U - W S, O = Qg S + Aqk Delta,
S' = dec S + Kd^T Delta. Going backwards through the chunks of one sequence with dS (the
gradient of the state leaving the chunk) in registers:

    dDelta = Aqk^T dO + Kd dS          (= dU)
    dW     = -dDelta S^T               dQg  = dO S^T
    dAqk   = dO Delta^T                dKd  = Delta dS^T        ddec = <S, dS>
    dS    <- Qg^T dO + dec dS - W^T dDelta

The state S entering each chunk comes from the forward recurrence (recomputed). The quantities
summed over V (dW, dQg, dAqk, dKd, ddec) are written per V tile (summed by the launcher) or,
with ATOMIC, added atomically into one buffer.
All tensors here are in the chunk layout [B, H, NC, rows, D], float32; the dots take their
operands in ``DT`` (the input's 16-bit type for 16-bit inputs) with float32 accumulation.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kernel_variants.triton.chunk_fwd import (
    _chunk_coords,
    _load_kappa,
    _pair_slot,
    _row_decay,
    _seq_coords,
    _unit_lower_inverse,
)


@triton.jit
def eda_bwd_h_kernel(
    h, w, u, qg, aqk, kd, dec, do, dht, du, dw, dqg, daqk, dkd, ddec, dh0,
    q, k, e, g, scale, cu_seqlens, chunk_offsets, T, NCT, NBH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_DHT: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr,
    DT: tl.constexpr, NATIVE: tl.constexpr, USE_G: tl.constexpr, ATOMIC: tl.constexpr,
):
    """With NATIVE, Qg, Aqk, Kd and the chunk decay are built from q, k, e, g ([B, T, H, .]
    inputs) and dO is read in that layout; otherwise all of them come in the chunk layout."""
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, L, sc0 = _seq_coords(i_n, i_h, i_nh, T, NCT, cu_seqlens, chunk_offsets, IS_VARLEN)
    NT = tl.cdiv(L, BT)
    NR: tl.constexpr = 2 * BT
    o_r = tl.arange(0, NR)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_kv = o_k[:, None] * V + o_v[None, :]
    # partial sums over V tiles: tile i_v writes its own slice
    NSC = NBH * NCT

    b_dS = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dS += tl.load(dht + i_nh * K * V + p_kv, mask=m_kv, other=0.)
    for i_t in range(NT - 1, -1, -1):
        sc = sc0 + i_t
        sp = i_v * NSC + sc
        b_S = tl.load(h + sc * K * V + p_kv, mask=m_kv, other=0.).to(tl.float32)
        p_rk = (sc * NR + o_r)[:, None] * K + o_k[None, :]
        p_rv = (sc * NR + o_r)[:, None] * V + o_v[None, :]
        p_tk = (sc * BT + o_t)[:, None] * K + o_k[None, :]
        p_tv = (sc * BT + o_t)[:, None] * V + o_v[None, :]
        b_w = tl.load(w + p_rk, mask=m_k[None, :], other=0.)
        b_u = tl.load(u + p_rv, mask=m_v[None, :], other=0.)
        if NATIVE:
            ev = (o_r % 2) == 0
            t_r = i_t * BT + o_r // 2
            m_r = t_r < L
            tok = bos + t_r
            m_t = (i_t * BT + o_t) < L
            tokq = bos + i_t * BT + o_t
            b_kap = _load_kappa(k, e, tok, i_h, ev, m_r, o_k, m_k, H, K).to(tl.float32)
            b_q = tl.load(q + (tokq * H + i_h)[:, None] * K + o_k[None, :],
                          mask=m_t[:, None] & m_k[None, :], other=0.).to(tl.float32) * scale
            b_a = tl.dot(b_q.to(DT), tl.trans(b_kap.to(DT)), input_precision=PREC)
            m_A = o_r[None, :] <= 2 * o_t[:, None] + 1
            if USE_G:
                b_G, b_gl = _row_decay(g, tok, i_h, ev, m_r, H)
                b_gq = tl.cumsum(tl.load(g + tokq * H + i_h, mask=m_t, other=0.).to(tl.float32), axis=0)
                b_a = b_a * tl.exp(tl.where(m_A, b_gq[:, None] - b_G[None, :], 0.))
                b_qg = b_q * tl.exp(b_gq)[:, None]
                b_kd = b_kap * tl.exp(b_gl - b_G)[:, None]
                b_dec = tl.exp(b_gl)
            else:
                b_qg = b_q
                b_kd = b_kap
                b_dec = 1.
            b_a = tl.where(m_A, b_a, 0.)
            b_do = tl.load(do + (tokq * H + i_h)[:, None] * V + o_v[None, :],
                           mask=m_t[:, None] & m_v[None, :], other=0.).to(tl.float32)
        else:
            b_kd = tl.load(kd + p_rk, mask=m_k[None, :], other=0.)
            b_qg = tl.load(qg + p_tk, mask=m_k[None, :], other=0.)
            b_a = tl.load(aqk + (sc * BT + o_t)[:, None] * NR + o_r[None, :])
            b_do = tl.load(do + p_tv, mask=m_v[None, :], other=0.)
            b_dec = tl.load(dec + sc)

        b_Sd = b_S.to(DT)
        b_wd = b_w.to(DT)
        b_dod = b_do.to(DT)
        b_d = b_u.to(tl.float32) - tl.dot(b_wd, b_Sd, input_precision=PREC)
        b_dd = (tl.dot(tl.trans(b_a.to(DT)), b_dod, input_precision=PREC)
                + tl.dot(b_kd.to(DT), b_dS.to(DT), input_precision=PREC))
        tl.store(du + p_rv, b_dd, mask=m_v[None, :])
        b_ddd = b_dd.to(DT)
        b_dw = -tl.dot(b_ddd, tl.trans(b_Sd), input_precision=PREC)
        b_dqg = tl.dot(b_dod, tl.trans(b_Sd), input_precision=PREC)
        b_da = tl.dot(b_dod, tl.trans(b_d.to(DT)), input_precision=PREC)
        b_dkd = tl.dot(b_d.to(DT), tl.trans(b_dS.to(DT)), input_precision=PREC)
        b_ddec = tl.sum(tl.sum(b_S * b_dS, axis=1), axis=0)
        p_dw = dw + (sp * NR + o_r)[:, None] * K + o_k[None, :]
        p_dqg = dqg + (sp * BT + o_t)[:, None] * K + o_k[None, :]
        p_da = daqk + (sp * BT + o_t)[:, None] * NR + o_r[None, :]
        p_dkd = dkd + (sp * NR + o_r)[:, None] * K + o_k[None, :]
        if ATOMIC:
            # several V tiles add into one buffer (zeroed by the launcher)
            tl.atomic_add(p_dw, b_dw, mask=m_k[None, :])
            tl.atomic_add(p_dqg, b_dqg, mask=m_k[None, :])
            tl.atomic_add(p_da, b_da)
            tl.atomic_add(p_dkd, b_dkd, mask=m_k[None, :])
            tl.atomic_add(ddec + sp, b_ddec)
        else:
            tl.store(p_dw, b_dw, mask=m_k[None, :])
            tl.store(p_dqg, b_dqg, mask=m_k[None, :])
            tl.store(p_da, b_da)
            tl.store(p_dkd, b_dkd, mask=m_k[None, :])
            tl.store(ddec + sp, b_ddec)
        b_dS = (tl.dot(tl.trans(b_qg.to(DT)), b_dod, input_precision=PREC) + b_dec * b_dS
                - tl.dot(tl.trans(b_wd), b_ddd, input_precision=PREC))
    tl.store(dh0 + i_nh * K * V + p_kv, b_dS, mask=m_kv)


@triton.jit
def _bwd_inputs(q, k, e, g, i_t, bos, L, i_h, o_r, o_t, o_k, m_k, H: tl.constexpr, K: tl.constexpr,
                BT: tl.constexpr, USE_G: tl.constexpr, PAST: tl.constexpr = False):
    """What ``_bwd_operands`` reads of chunk ``i_t``: kappa [NR, BK] (input dtype, interleaved
    rows), q [BT, BK], g at the erase rows [NR] and g per token [BT] (float32; zeros without a gate).
    PAST: ``i_t`` may be before the sequence's first chunk (a scan's prefetch), which loads zeros."""
    ev = (o_r % 2) == 0
    t_r = i_t * BT + o_r // 2
    t_q = i_t * BT + o_t
    m_r = t_r < L
    m_t = t_q < L
    if PAST:
        m_r = m_r & (t_r >= 0)
        m_t = m_t & (t_q >= 0)
    tok = bos + t_r
    tokq = bos + t_q
    b_kap = _load_kappa(k, e, tok, i_h, ev, m_r, o_k, m_k, H, K)
    b_q = tl.load(q + (tokq * H + i_h)[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.)
    if USE_G:
        b_gr = tl.load(g + tok * H + i_h, mask=m_r & ev, other=0.).to(tl.float32)
        b_gt = tl.load(g + tokq * H + i_h, mask=m_t, other=0.).to(tl.float32)
    else:
        b_gr = tl.zeros([2 * BT], dtype=tl.float32)
        b_gt = tl.zeros([BT], dtype=tl.float32)
    return b_kap, b_q, b_gr, b_gt


@triton.jit
def _bwd_from_inputs(b_kap, b_q, b_gr, b_gt, scale, o_r, o_t, BT: tl.constexpr, USE_G: tl.constexpr,
                     DT: tl.constexpr, PREC: tl.constexpr, OPS: tl.constexpr = 0):
    """``_bwd_operands`` from the tiles ``_bwd_inputs`` read."""
    b_kap = b_kap.to(DT)
    b_a = tl.dot(b_q.to(DT), tl.trans(b_kap), input_precision=PREC) * scale
    m_A = o_r[None, :] <= 2 * o_t[:, None] + 1
    b_kf = tl.full([2 * BT], 1., tl.float32)
    if USE_G:
        b_G = tl.cumsum(b_gr, axis=0)
        b_gl = tl.sum(b_gr, axis=0)
        b_gq = tl.cumsum(b_gt, axis=0)
        b_a = b_a * tl.exp(tl.where(m_A, b_gq[:, None] - b_G[None, :], 0.))
        b_qg = b_q.to(tl.float32) * (tl.exp(b_gq) * scale)[:, None]
        if OPS % 2 == 1:
            b_kf = tl.exp(b_gl - b_G)
            b_kd = b_kap
        else:
            b_kd = (b_kap.to(tl.float32) * tl.exp(b_gl - b_G)[:, None]).to(DT)
        b_dec = tl.exp(b_gl)
    else:
        b_qg = b_q.to(tl.float32) * scale
        b_kd = b_kap
        b_dec = 1.
    if (OPS // 2) % 2 == 0:
        b_qg = b_qg.to(DT)
    b_a = tl.where(m_A, b_a, 0.)
    if (OPS // 4) % 2 == 0:
        b_a = b_a.to(DT)
    return b_kd, b_qg, b_a, b_dec, b_kf


@triton.jit
def _bwd_operands(q, k, e, g, scale, i_t, bos, L, i_h, o_r, o_t, o_k, m_k, H: tl.constexpr,
                  K: tl.constexpr, BT: tl.constexpr, USE_G: tl.constexpr, DT: tl.constexpr,
                  PREC: tl.constexpr, OPS: tl.constexpr = 0):
    """Kd [NR, K], Qg [BT, K], Aqk [BT, NR] (in DT), the chunk decay of chunk ``i_t`` and Kd's row
    factor, built from the inputs (interleaved rows, as the forward). OPS (a bit mask, for the dS
    scan): 1: Kd is left unscaled (kappa, exact in DT) and the row factor exp(G_n - G) is returned
    for the caller to apply to Kd's product (else the factor is 1 and Kd holds it, rounded to
    DT); 2: Qg in float32; 4: Aqk in float32."""
    b_kap, b_q, b_gr, b_gt = _bwd_inputs(q, k, e, g, i_t, bos, L, i_h, o_r, o_t, o_k, m_k, H, K, BT, USE_G)
    return _bwd_from_inputs(b_kap, b_q, b_gr, b_gt, scale, o_r, o_t, BT, USE_G, DT, PREC, OPS)


@triton.jit
def _do_tile(do, bos, i_t, o_t, m_t, i_h, o_v, m_v, H: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
             DT: tl.constexpr):
    """dO of chunk ``i_t`` on columns ``o_v`` ([BT, BV], in DT; rows past the sequence are zero)."""
    return tl.load(do + ((bos + i_t * BT + o_t) * H + i_h)[:, None] * V + o_v[None, :],
                   mask=m_t[:, None] & m_v[None, :], other=0.).to(DT)


@triton.jit
def _dh_inputs(w, do, q, k, e, g, i_t, sc0, bos, L, i_h, o_r, o_t, o_k, m_k, o_v, m_v, H: tl.constexpr,
               K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, USE_G: tl.constexpr, DT: tl.constexpr,
               tm=None, beta=None, gamma=None, USE_TM: tl.constexpr = False):
    """What the dS scan reads of chunk ``i_t`` (zeros for ``i_t`` < 0, the prefetch after the
    first chunk): ``_bwd_inputs``, dO [BT, BV] (DT) and W [NR, BK] (DT); with USE_TM, in W's place
    Tm diag(b e^G) [NR, NR] (DT): the chunk inverse permuted to the interleaved rows, its columns
    times the rows' strengths and decay, so that W = Tm diag(b e^G) kappa."""
    NR: tl.constexpr = 2 * BT
    b_kap, b_q, b_gr, b_gt = _bwd_inputs(q, k, e, g, i_t, bos, L, i_h, o_r, o_t, o_k, m_k, H, K, BT, USE_G, True)
    t_q = i_t * BT + o_t
    b_do = _do_tile(do, bos, i_t, o_t, (t_q < L) & (t_q >= 0), i_h, o_v, m_v, H, V, BT, DT)
    m_c = (i_t + 0 * o_r) >= 0
    if USE_TM:
        ev = (o_r % 2) == 0
        # interleaved row r is row r // 2 of the erase block (even r) or of the write block
        p_r = o_r // 2 + tl.where(ev, 0, BT)
        b_tm = tl.load(tm + (sc0 + i_t) * NR * NR + p_r[:, None] * NR + p_r[None, :],
                       mask=m_c[:, None] & m_c[None, :], other=0.).to(tl.float32)
        t_r = i_t * BT + o_r // 2
        m_r = (t_r < L) & (t_r >= 0)
        tok = bos + t_r
        b_bg = tl.where(ev, tl.load(gamma + tok * H + i_h, mask=m_r, other=0.),
                        tl.load(beta + tok * H + i_h, mask=m_r, other=0.)).to(tl.float32)
        if USE_G:
            b_bg = b_bg * tl.exp(tl.cumsum(b_gr, axis=0))
        b_w = (b_tm * b_bg[None, :]).to(DT)
    else:
        b_w = tl.load(w + ((sc0 + i_t) * NR + o_r)[:, None] * K + o_k[None, :], mask=m_c[:, None] & m_k[None, :],
                      other=0.).to(DT)
    return b_kap, b_q, b_gr, b_gt, b_do, b_w


@triton.jit
def eda_bwd_dh_kernel(
    w, do, dht, dh, dh0, q, k, e, g, scale, cu_seqlens, chunk_offsets, T, NCT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_DHT: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr,
    DT: tl.constexpr, USE_G: tl.constexpr, STORE_DH: tl.constexpr = True, du=None,
    STORE_DU: tl.constexpr = False, OPS: tl.constexpr = 0, pair_offsets=None, NC2=0,
    PAIRS: tl.constexpr = False, PREFETCH: tl.constexpr = False, tm=None, beta=None, gamma=None,
    USE_TM: tl.constexpr = False, TM_P: tl.constexpr = False,
):
    """The sequential part of the backward (config ``bwd_rec: split``): only dS, carried
    backwards through the chunks, dS <- Qg^T dO + dec dS - W^T (Aqk^T dO + Kd dS); stores the
    gradient of the state leaving each chunk (``dh``, the layout of the forward's ``h``) for
    ``eda_bwd_grad_kernel`` (not with STORE_DH false: the first of the two scans over pieces,
    which needs only dS of the initial state), and dS of the initial state. STORE_DU: also store
    dDelta (= dU, computed here anyway) per chunk, for ``eda_bwd_gradk_kernel``. OPS: which of
    Kd, Qg, Aqk skip their rounding to DT (``_bwd_operands``). PAIRS (``bwd_states: pairs``): ``dh``
    has one slot per pair of chunks and holds the gradient leaving the odd chunks (and the last
    chunk); ``eda_bwd_gradk_kernel`` rebuilds the even chunks' from the next chunk's. PREFETCH
    (config ``bwd_prefetch``): each step loads the inputs of the chunk before it (kappa, q, g, dO,
    W) ahead of its own products and carries them. USE_TM (config ``bwd_h: tm_dh``): W is not
    read; W^T dDelta is formed as kappa^T diag(b e^G) (Tm^T dDelta) from the forward's chunk
    inverse (``_dh_inputs``), so the backward needs no W/U kernel. TM_P (config ``bwd_h: tm_dhp``):
    with M = Tm diag(b e^G), M^T dDelta = P dS + c with P = M^T diag(kf) Kd and c = M^T Aqk^T dO
    formed from the chunk's inputs alone, so the step's chain is two products deep (P dS, then
    kappa^T), as with W, instead of three."""
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, L, sc0 = _seq_coords(i_n, i_h, i_nh, T, NCT, cu_seqlens, chunk_offsets, IS_VARLEN)
    if PAIRS:
        ps0 = _pair_slot(i_n, i_h, i_nh, NC2, pair_offsets, IS_VARLEN)
    NT = tl.cdiv(L, BT)
    NR: tl.constexpr = 2 * BT
    o_r = tl.arange(0, NR)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_kv = o_k[:, None] * V + o_v[None, :]

    b_dS = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dS += tl.load(dht + i_nh * K * V + p_kv, mask=m_kv, other=0.)
    if PREFETCH:
        n_kap, n_q, n_gr, n_gt, n_do, n_w = _dh_inputs(w, do, q, k, e, g, NT - 1, sc0, bos, L, i_h, o_r, o_t,
                                                      o_k, m_k, o_v, m_v, H, K, V, BT, USE_G, DT, tm, beta,
                                                      gamma, USE_TM)
    for i_t in range(NT - 1, -1, -1):
        sc = sc0 + i_t
        if STORE_DH:
            if PAIRS:
                if (i_t % 2 == 1) or (i_t == NT - 1):
                    tl.store(dh + (ps0 + i_t // 2) * K * V + p_kv, b_dS.to(dh.dtype.element_ty), mask=m_kv)
            else:
                tl.store(dh + sc * K * V + p_kv, b_dS.to(dh.dtype.element_ty), mask=m_kv)
        if PREFETCH:
            b_kap, b_q, b_gr, b_gt, b_do, b_w = n_kap, n_q, n_gr, n_gt, n_do, n_w
            n_kap, n_q, n_gr, n_gt, n_do, n_w = _dh_inputs(w, do, q, k, e, g, i_t - 1, sc0, bos, L, i_h, o_r, o_t,
                                                          o_k, m_k, o_v, m_v, H, K, V, BT, USE_G, DT, tm, beta,
                                                          gamma, USE_TM)
        else:
            b_kap, b_q, b_gr, b_gt, b_do, b_w = _dh_inputs(w, do, q, k, e, g, i_t, sc0, bos, L, i_h, o_r, o_t,
                                                          o_k, m_k, o_v, m_v, H, K, V, BT, USE_G, DT, tm, beta,
                                                          gamma, USE_TM)
        b_kd, b_qg, b_a, b_dec, b_kf = _bwd_from_inputs(b_kap, b_q, b_gr, b_gt, scale, o_r, o_t, BT, USE_G, DT,
                                                        PREC, OPS)
        b_ad = tl.dot(tl.trans(b_a), b_do.to(b_a.dtype), input_precision=PREC)
        if USE_TM and TM_P:  # off the chain: P = M^T diag(kf) Kd [NR, BK], c = M^T Aqk^T dO [NR, BV]
            if OPS % 2 == 1:
                b_mk = (b_w.to(tl.float32) * b_kf[:, None]).to(DT)
            else:
                b_mk = b_w
            b_p = tl.dot(tl.trans(b_mk), b_kd, input_precision=PREC).to(DT)
            b_c = tl.dot(tl.trans(b_w), b_ad.to(DT), input_precision=PREC)
        b_dd = tl.dot(b_kd, b_dS.to(DT), input_precision=PREC)
        if OPS % 2 == 1:
            b_dd = b_dd * b_kf[:, None]
        b_dd += b_ad
        if STORE_DU:
            tl.store(du + (sc * NR + o_r)[:, None] * V + o_v[None, :], b_dd.to(du.dtype.element_ty),
                     mask=m_v[None, :])
        if USE_TM:  # W^T dDelta = kappa^T (Tm diag(b e^G))^T dDelta
            if TM_P:
                b_y = tl.dot(b_p, b_dS.to(DT), input_precision=PREC) + b_c
            else:
                b_y = tl.dot(tl.trans(b_w), b_dd.to(DT), input_precision=PREC)
            b_dS = (tl.dot(tl.trans(b_qg), b_do.to(b_qg.dtype), input_precision=PREC) + b_dec * b_dS
                    - tl.dot(tl.trans(b_kap.to(DT)), b_y.to(DT), input_precision=PREC))
        else:
            b_dS = (tl.dot(tl.trans(b_qg), b_do.to(b_qg.dtype), input_precision=PREC) + b_dec * b_dS
                    - tl.dot(tl.trans(b_w), b_dd.to(DT), input_precision=PREC))
    tl.store(dh0 + i_nh * K * V + p_kv, b_dS, mask=m_kv)


@triton.jit
def _grad_accumulators(NR: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    """Zeros for dW, dKd [NR, BK], dQg [BT, BK], dAqk [BT, NR] and ddec [BK]."""
    return (tl.zeros([NR, BK], dtype=tl.float32), tl.zeros([NR, BK], dtype=tl.float32),
            tl.zeros([BT, BK], dtype=tl.float32), tl.zeros([BT, NR], dtype=tl.float32),
            tl.zeros([BK], dtype=tl.float32))


@triton.jit
def _state_tiles(h, dh, sc, o_k, m_k, o_v, m_v, K: tl.constexpr, V: tl.constexpr):
    """The chunk's state S and state gradient dS on rows ``o_k`` and columns ``o_v`` (scratch
    layout [.., NC, K, V], chunk ``sc``)."""
    p_kv = sc * K * V + o_k[:, None] * V + o_v[None, :]
    m_kv = m_k[:, None] & m_v[None, :]
    return tl.load(h + p_kv, mask=m_kv, other=0.), tl.load(dh + p_kv, mask=m_kv, other=0.)


@triton.jit
def _grad_products(b_S, b_dS, b_d, b_dd, b_do, b_dw, b_dkd, b_dqg, b_da, b_ddec, with_da, PREC: tl.constexpr,
                   DT: tl.constexpr):
    """One V tile's part of the per-chunk gradients, given the chunk's states S and dS on the
    program's K range, Delta, dDelta (DT) and dO: dW -= dDelta S^T, dQg += dO S^T, dKd += Delta dS^T,
    dAqk += dO Delta^T (when ``with_da``) and ddec += <S, dS> per K row."""
    b_Sd = b_S.to(DT)
    b_dw -= tl.dot(b_dd, tl.trans(b_Sd), input_precision=PREC)
    b_dqg += tl.dot(b_do, tl.trans(b_Sd), input_precision=PREC)
    b_dkd += tl.dot(b_d, tl.trans(b_dS.to(DT)), input_precision=PREC)
    if with_da:
        b_da += tl.dot(b_do, tl.trans(b_d), input_precision=PREC)
    b_ddec += tl.sum(b_S.to(tl.float32) * b_dS.to(tl.float32), axis=1)
    return b_dw, b_dkd, b_dqg, b_da, b_ddec


@triton.jit
def eda_bwd_grad_kernel(
    h, dh, w, u, do, du, dw, dqg, daqk, dkd, ddec, q, k, e, g, scale, cu_seqlens, chunk_indices,
    T, NCT, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr, DT: tl.constexpr,
    USE_G: tl.constexpr,
):
    """The parallel part of the backward (config ``bwd_rec: split``), one program per chunk,
    every V tile in turn (no atomics): with S (``h``) and dS (``dh``) of the chunk,
    Delta = U - W S, dDelta = Aqk^T dO + Kd dS (= dU), dW = -dDelta S^T, dQg = dO S^T,
    dAqk = dO Delta^T, dKd = Delta dS^T, ddec = <S, dS>."""
    i_tg, i_bh = tl.program_id(0), tl.program_id(1)
    sc = i_bh.to(tl.int64) * NCT + i_tg
    _grad_chunk(h, dh, w, u, do, du, dw, dqg, daqk, dkd, ddec, q, k, e, g, scale, cu_seqlens,
                chunk_indices, T, NCT, i_tg, i_bh, sc, H, K, V, BT, BK, BV, IS_VARLEN, PREC, DT, USE_G)


@triton.jit
def _grad_chunk(
    h, dh, w, u, do, du, dw, dqg, daqk, dkd, ddec, q, k, e, g, scale, cu_seqlens, chunk_indices,
    T, NCT, i_tg, i_bh, ss, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr,
    DT: tl.constexpr, USE_G: tl.constexpr,
):
    """The grad kernel's work on chunk ``i_tg`` of sequence-head ``i_bh``; the per-chunk gradients
    (dU, dW, dKd, dQg, dAqk) go to scratch slot ``ss`` (the chunk's own index when unfused)."""
    i_b, i_h = i_bh // H, i_bh % H
    i_t, bos, L = _chunk_coords(i_tg, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN)
    sc = i_bh.to(tl.int64) * NCT + i_tg
    NR: tl.constexpr = 2 * BT
    o_r = tl.arange(0, NR)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    m_t = (i_t * BT + o_t) < L
    b_kd, b_qg, b_a, b_dec, _ = _bwd_operands(q, k, e, g, scale, i_t, bos, L, i_h, o_r, o_t, o_k, m_k,
                                              H, K, BT, USE_G, DT, PREC)
    b_w = tl.load(w + (sc * NR + o_r)[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0.).to(DT)
    b_dw, b_dkd, b_dqg, b_da, b_ddec = _grad_accumulators(NR, BT, BK)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        b_S, b_dS = _state_tiles(h, dh, sc, o_k, m_k, o_v, m_v, K, V)
        p_rv = (sc * NR + o_r)[:, None] * V + o_v[None, :]
        b_u = tl.load(u + p_rv, mask=m_v[None, :], other=0.).to(tl.float32)
        b_do = _do_tile(do, bos, i_t, o_t, m_t, i_h, o_v, m_v, H, V, BT, DT)
        b_d = (b_u - tl.dot(b_w, b_S.to(DT), input_precision=PREC)).to(DT)
        b_dd = tl.dot(tl.trans(b_a), b_do, input_precision=PREC) + tl.dot(b_kd, b_dS.to(DT), input_precision=PREC)
        tl.store(du + (ss * NR + o_r)[:, None] * V + o_v[None, :], b_dd, mask=m_v[None, :])
        b_dw, b_dkd, b_dqg, b_da, b_ddec = _grad_products(b_S, b_dS, b_d, b_dd.to(DT), b_do, b_dw, b_dkd, b_dqg,
                                                          b_da, b_ddec, True, PREC, DT)
    tl.store(dw + (ss * NR + o_r)[:, None] * K + o_k[None, :], b_dw, mask=m_k[None, :])
    tl.store(dkd + (ss * NR + o_r)[:, None] * K + o_k[None, :], b_dkd, mask=m_k[None, :])
    tl.store(dqg + (ss * BT + o_t)[:, None] * K + o_k[None, :], b_dqg, mask=m_k[None, :])
    tl.store(daqk + (ss * BT + o_t)[:, None] * NR + o_r[None, :], b_da)
    tl.store(ddec + sc, tl.sum(b_ddec, axis=0))


@triton.jit
def eda_bwd_gradk_kernel(
    h, dh, vn, du, do, dw, dqg, daqk, dkd, ddec, cu_seqlens, chunk_indices, T, NCT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr, DT: tl.constexpr,
    w=None, q=None, k=None, e=None, g=None, scale=1., pair_offsets=None, NC2=0,
    PAIRS: tl.constexpr = False, USE_G: tl.constexpr = False, QDT: tl.constexpr = tl.float32,
):
    """The per-chunk gradients over K tiles (config ``bk_grad`` > 0): one program per (chunk, K
    tile), every V tile in turn. Unlike ``eda_bwd_grad_kernel`` it contracts nothing over K: the
    new values Delta (``vn``, stored by the states recompute) and dDelta (``du``, stored by the dS
    scan) come from memory, so a program holds [rows, BK] accumulators instead of [rows, K]:
    dW = -dDelta S^T, dQg = dO S^T, dKd = Delta dS^T on its K tile, dAqk = dO Delta^T (the first
    K tile stores it) and its K tile's part of ddec = <S, dS> (``ddec`` [.., NC, NKT], summed by
    the launcher). (The same products transposed, the state tile as the left operand, compile to
    wgmma instead of mma.sync on sm_90a but timed the same: S1 8.722 against 8.670 ms, S5 10.160
    against 10.171, H200 run 49; not kept.)

    PAIRS (``bwd_states: pairs``): ``h`` and ``dh`` have one slot per pair of chunks (2i, 2i + 1)
    holding the state entering chunk 2i and the gradient leaving chunk 2i + 1 (or leaving 2i when it
    is the sequence's last chunk). An odd chunk rebuilds its entering state across the chunk before,
    S = dec S_prev + Kd^T Delta; an even one its leaving gradient across the chunk after,
    dS = Qg^T dO + dec dS_next - W^T dDelta (the dS scan's step; Qg in QDT as the scan)."""
    i_tg, i_bh, i_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_t, bos, L = _chunk_coords(i_tg, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN)
    sc = i_bh.to(tl.int64) * NCT + i_tg
    NR: tl.constexpr = 2 * BT
    NKT: tl.constexpr = (K + BK - 1) // BK
    o_r = tl.arange(0, NR)
    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    m_t = (i_t * BT + o_t) < L
    slot = sc
    if PAIRS:
        if IS_VARLEN:
            i_n = tl.load(chunk_indices + i_tg * 2).to(tl.int32)
        else:
            i_n = i_b
        slot = _pair_slot(i_n, i_h, i_bh, NC2, pair_offsets, IS_VARLEN) + i_t // 2
        odd = i_t % 2 == 1
        rebuild_dS = (i_t % 2 == 0) & (i_t < tl.cdiv(L, BT) - 1)
        j = tl.where(odd, i_t - 1, i_t + 1)        # the neighbour across which the rebuild runs
        sn = sc + j - i_t
        # the rebuild's Kd (the decay to the chunk's end applied and rounded, as the states
        # recompute) and Qg (float32, then QDT as the dS scan); its Aqk is not used
        b_kdn, b_qgn, _, b_decn, _ = _bwd_operands(q, k, e, g, scale, j, bos, L, i_h, o_r, o_t, o_k, m_k, H, K,
                                                   BT, USE_G, DT, PREC, 2)
        b_qgn = b_qgn.to(QDT)
        # (the last chunk's neighbour does not exist: nothing of it is read)
        m_wn = (o_r < tl.where(rebuild_dS, NR, 0))[:, None] & m_k[None, :]
        b_wn = tl.load(w + (sn * NR + o_r)[:, None] * K + o_k[None, :], mask=m_wn, other=0.).to(DT)
        m_tn = (j * BT + o_t) < L
    b_dw, b_dkd, b_dqg, b_da, b_ddec = _grad_accumulators(NR, BT, BK)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        b_S, b_dS = _state_tiles(h, dh, slot, o_k, m_k, o_v, m_v, K, V)
        p_rv = (sc * NR + o_r)[:, None] * V + o_v[None, :]
        b_d = tl.load(vn + p_rv, mask=m_v[None, :], other=0.).to(DT)
        b_dd = tl.load(du + p_rv, mask=m_v[None, :], other=0.).to(DT)
        b_do = _do_tile(do, bos, i_t, o_t, m_t, i_h, o_v, m_v, H, V, BT, DT)
        if PAIRS:
            p_rn = (sn * NR + o_r)[:, None] * V + o_v[None, :]
            if odd:
                b_dn = tl.load(vn + p_rn, mask=m_v[None, :], other=0.).to(DT)
                b_S = (b_S.to(tl.float32) * b_decn
                       + tl.dot(tl.trans(b_kdn), b_dn, input_precision=PREC)).to(b_S.dtype)
            if rebuild_dS:
                b_ddn = tl.load(du + p_rn, mask=m_v[None, :], other=0.).to(DT)
                b_don = _do_tile(do, bos, j, o_t, m_tn, i_h, o_v, m_v, H, V, BT, QDT)
                b_dS = (tl.dot(tl.trans(b_qgn), b_don, input_precision=PREC) + b_decn * b_dS.to(tl.float32)
                        - tl.dot(tl.trans(b_wn), b_ddn, input_precision=PREC)).to(b_dS.dtype)
        b_dw, b_dkd, b_dqg, b_da, b_ddec = _grad_products(b_S, b_dS, b_d, b_dd, b_do, b_dw, b_dkd, b_dqg, b_da,
                                                          b_ddec, i_k == 0, PREC, DT)
    tl.store(dw + (sc * NR + o_r)[:, None] * K + o_k[None, :], b_dw.to(dw.dtype.element_ty), mask=m_k[None, :])
    tl.store(dkd + (sc * NR + o_r)[:, None] * K + o_k[None, :], b_dkd.to(dkd.dtype.element_ty), mask=m_k[None, :])
    tl.store(dqg + (sc * BT + o_t)[:, None] * K + o_k[None, :], b_dqg.to(dqg.dtype.element_ty), mask=m_k[None, :])
    if i_k == 0:
        tl.store(daqk + (sc * BT + o_t)[:, None] * NR + o_r[None, :], b_da.to(daqk.dtype.element_ty))
    tl.store(ddec + sc * NKT + i_k, tl.sum(b_ddec, axis=0))


@triton.jit
def eda_bwd_intra_kernel(
    q, k, e, v, g, beta, gamma, dw, du, dqg, daqk, dkd, ddec,
    dq, dk, de, dv, dg, dbeta, dgamma, cu_seqlens, chunk_indices, scale, T, NCT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, LOG2N: tl.constexpr, USE_G: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, DT: tl.constexpr, LOWP: tl.constexpr = False,
):
    """Gradients of the inputs of one chunk from those of W, U, Qg, Aqk, Kd and the chunk decay.

    Recomputes A and Tm = (I + A)^-1 (on the whole 2BT x 2BT block), then
    dA = -Tm^T dTm Tm^T on the strict lower part, with dTm = dW (b e^G kappa)^T + dU (b nu)^T;
    row gradients of the decay and strengths are folded to tokens in registers (the decay's
    cumulative sum is undone by a reverse cumulative sum).

    LOWP (config ``intra_dots: half``): the dots that take a K or V tile (dTm, dkappa, dq, dnu)
    get their operands in DT instead of float32 (tf32): half the operand registers and twice the
    tensor-core rate; the inverse and dA stay in float32.
    """
    i_tg, i_bh = tl.program_id(0), tl.program_id(1)
    sc = i_bh.to(tl.int64) * NCT + i_tg
    _intra_chunk(q, k, e, v, g, beta, gamma, dw, du, dqg, daqk, dkd, ddec,
                 dq, dk, de, dv, dg, dbeta, dgamma, cu_seqlens, chunk_indices, scale, T, NCT,
                 i_tg, i_bh, sc, H, K, V, BT, BK, BV, LOG2N, USE_G, IS_VARLEN, PREC, DT, LOWP)


@triton.jit
def _intra_chunk(
    q, k, e, v, g, beta, gamma, dw, du, dqg, daqk, dkd, ddec,
    dq, dk, de, dv, dg, dbeta, dgamma, cu_seqlens, chunk_indices, scale, T, NCT, i_tg, i_bh, ss,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, LOG2N: tl.constexpr, USE_G: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, DT: tl.constexpr, LOWP: tl.constexpr,
):
    """The intra kernel's work on chunk ``i_tg`` of sequence-head ``i_bh``, reading the per-chunk
    gradients from scratch slot ``ss``. LOWP: the K- and V-tile dots with DT operands."""
    ODT: tl.constexpr = DT if LOWP else tl.float32
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
    b_b = tl.where(ev, tl.load(gamma + tok * H + i_h, mask=m_r, other=0.),
                   tl.load(beta + tok * H + i_h, mask=m_r, other=0.)).to(tl.float32)
    m_A = o_r[:, None] > o_r[None, :]
    m_Q = o_r[None, :] <= 2 * o_t[:, None] + 1
    if USE_G:
        b_G, b_gl = _row_decay(g, tok, i_h, ev, m_r, H)
        b_gq = tl.cumsum(tl.load(g + tokq * H + i_h, mask=m_t, other=0.).to(tl.float32), axis=0)
        b_eG = tl.exp(b_G)
        b_D = tl.exp(tl.where(m_A, b_G[:, None] - b_G[None, :], 0.))
        b_Dq = tl.exp(tl.where(m_Q, b_gq[:, None] - b_G[None, :], 0.))
        b_ekd = tl.exp(b_gl - b_G)
        b_egq = tl.exp(b_gq)
        b_dGn = tl.load(ddec + sc) * tl.exp(b_gl)
    else:
        b_eG = tl.full([NR], 1., tl.float32)
        b_D = tl.full([NR, NR], 1., tl.float32)
        b_Dq = tl.full([BT, NR], 1., tl.float32)
        b_ekd = tl.full([NR], 1., tl.float32)
        b_egq = tl.full([BT], 1., tl.float32)
        b_dGn = tl.sum(tl.zeros([2], dtype=tl.float32), axis=0)
    b_bg = b_b * b_eG
    p_rows = (ss * NR + o_r)[:, None]

    # pass 1: kappa kappa^T, q kappa^T and dTm
    b_KK = tl.zeros([NR, NR], dtype=tl.float32)
    b_QK = tl.zeros([BT, NR], dtype=tl.float32)
    b_dR = tl.zeros([NR, NR], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_kap = _load_kappa(k, e, tok, i_h, ev, m_r, o_k, m_k, H, K).to(tl.float32)
        b_q = tl.load(q + (tokq * H + i_h)[:, None] * K + o_k[None, :],
                      mask=m_t[:, None] & m_k[None, :], other=0.).to(tl.float32)
        b_dw = tl.load(dw + p_rows * K + o_k[None, :], mask=m_k[None, :], other=0.).to(tl.float32)
        b_KK += tl.dot(b_kap.to(DT), tl.trans(b_kap.to(DT)), input_precision=PREC)
        b_QK += tl.dot(b_q.to(DT), tl.trans(b_kap.to(DT)), input_precision=PREC)
        b_dR += tl.dot(b_dw.to(ODT), tl.trans((b_kap * b_bg[:, None]).to(ODT)), input_precision=PREC)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        b_nu = tl.load(v + (tok * H + i_h)[:, None] * V + o_v[None, :],
                       mask=(m_r & (~ev))[:, None] & m_v[None, :], other=0.).to(tl.float32)
        b_du = tl.load(du + p_rows * V + o_v[None, :], mask=m_v[None, :], other=0.).to(tl.float32)
        b_dR += tl.dot(b_du.to(ODT), tl.trans((b_nu * b_b[:, None]).to(ODT)), input_precision=PREC)

    b_An = tl.where(m_A, b_KK * b_D, 0.)
    b_A = b_An * b_b[:, None]
    b_P = -b_A
    b_R = tl.where(o_r[:, None] == o_r[None, :], 1., 0.) + b_P
    for _ in tl.static_range(LOG2N - 1):
        b_P = tl.dot(b_P, b_P, input_precision=PREC)
        b_R = b_R + tl.dot(b_R, b_P, input_precision=PREC)
    b_RT = tl.trans(b_R)
    b_dA = -tl.dot(tl.dot(b_RT, b_dR, input_precision=PREC), b_RT, input_precision=PREC)
    b_dA = tl.where(m_A, b_dA, 0.)
    b_M = b_dA * b_A
    b_dG = tl.sum(b_M, axis=1) - tl.sum(b_M, axis=0)
    b_db = tl.sum(b_dA * b_An, axis=1)
    b_dKK = b_dA * b_b[:, None] * b_D
    b_dKKs = b_dKK + tl.trans(b_dKK)

    b_dA_qk = tl.load(daqk + (ss * BT + o_t)[:, None] * NR + o_r[None, :]).to(tl.float32)
    b_dA_qk = tl.where(m_Q, b_dA_qk, 0.)
    b_Aqk = b_QK * scale * b_Dq
    b_Pq = b_dA_qk * b_Aqk
    b_dgq = tl.sum(b_Pq, axis=1)
    b_dG -= tl.sum(b_Pq, axis=0)
    b_E = b_dA_qk * b_Dq * scale                          # gradient of q kappa^T (unscaled q)
    b_dbg = tl.zeros([NR], dtype=tl.float32)
    b_RTo = b_RT.to(ODT)
    b_dKKo = b_dKKs.to(ODT)
    b_Eo = b_E.to(ODT)

    # pass 2: dk, de, dq per K tile
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_kap = _load_kappa(k, e, tok, i_h, ev, m_r, o_k, m_k, H, K).to(tl.float32)
        b_q = tl.load(q + (tokq * H + i_h)[:, None] * K + o_k[None, :],
                      mask=m_t[:, None] & m_k[None, :], other=0.).to(tl.float32)
        b_dw = tl.load(dw + p_rows * K + o_k[None, :], mask=m_k[None, :], other=0.).to(tl.float32)
        b_dbk = tl.dot(b_RTo, b_dw.to(ODT), input_precision=PREC)
        b_dbg += tl.sum(b_dbk * b_kap, axis=1)
        b_dkap = b_dbk * b_bg[:, None]
        b_dkap += tl.dot(b_dKKo, b_kap.to(ODT), input_precision=PREC)
        b_dkap += tl.dot(tl.trans(b_Eo), b_q.to(ODT), input_precision=PREC)
        b_dq = tl.dot(b_Eo, b_kap.to(ODT), input_precision=PREC)
        b_dqg = tl.load(dqg + (ss * BT + o_t)[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0.).to(tl.float32)
        b_dq += b_dqg * (scale * b_egq)[:, None]
        b_dgq += tl.sum(b_dqg * b_q, axis=1) * scale * b_egq
        b_dkd = tl.load(dkd + p_rows * K + o_k[None, :], mask=m_k[None, :], other=0.).to(tl.float32)
        b_dkap += b_dkd * b_ekd[:, None]
        b_c = tl.sum(b_dkd * b_kap, axis=1) * b_ekd
        b_dGn += tl.sum(b_c, axis=0)
        b_dG -= b_c
        tl.store(dq + (tokq * H + i_h)[:, None] * K + o_k[None, :], b_dq.to(dq.dtype.element_ty),
                 mask=m_t[:, None] & m_k[None, :])
        p_kap = (tok * H + i_h)[:, None] * K + o_k[None, :]
        tl.store(de + p_kap, b_dkap.to(de.dtype.element_ty), mask=(m_r & ev)[:, None] & m_k[None, :])
        tl.store(dk + p_kap, b_dkap.to(dk.dtype.element_ty), mask=(m_r & (~ev))[:, None] & m_k[None, :])
    b_db += b_dbg * b_eG
    b_dG += b_dbg * b_bg

    # pass 3: dv per V tile
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        p_v = (tok * H + i_h)[:, None] * V + o_v[None, :]
        b_nu = tl.load(v + p_v, mask=(m_r & (~ev))[:, None] & m_v[None, :], other=0.).to(tl.float32)
        b_du = tl.load(du + p_rows * V + o_v[None, :], mask=m_v[None, :], other=0.).to(tl.float32)
        b_dnu = tl.dot(b_RTo, b_du.to(ODT), input_precision=PREC)
        b_db += tl.sum(b_dnu * b_nu, axis=1)
        tl.store(dv + p_v, (b_dnu * b_b[:, None]).to(dv.dtype.element_ty),
                 mask=(m_r & (~ev))[:, None] & m_v[None, :])

    # rows -> tokens: (erase, write) rows of token t are rows 2t, 2t + 1
    o_2 = tl.arange(0, 2)
    b_db2 = tl.reshape(b_db, [BT, 2])
    b_dgm = tl.sum(tl.where(o_2[None, :] == 0, b_db2, 0.), axis=1)
    b_dbt = tl.sum(tl.where(o_2[None, :] == 1, b_db2, 0.), axis=1)
    tl.store(dgamma + tokq * H + i_h, b_dgm.to(dgamma.dtype.element_ty), mask=m_t)
    tl.store(dbeta + tokq * H + i_h, b_dbt.to(dbeta.dtype.element_ty), mask=m_t)
    if USE_G:
        b_dgc = tl.sum(tl.reshape(b_dG, [BT, 2]), axis=1) + b_dgq
        b_dgc += tl.where(o_t == BT - 1, b_dGn, 0.)
        # g -> cumulative gc inside the chunk: dg_t = sum_{t' >= t} dgc_t'
        b_dg = tl.sum(b_dgc, axis=0) - tl.cumsum(b_dgc, axis=0) + b_dgc
        tl.store(dg + tokq * H + i_h, b_dg.to(dg.dtype.element_ty), mask=m_t)


@triton.jit
def eda_bwd_fused_kernel(
    h, dh, w, u, do, q, k, e, v, g, beta, gamma, du, dw, dqg, daqk, dkd, ddec,
    dq, dk, de, dv, dg, dbeta, dgamma, cu_seqlens, chunk_indices, scale, T, NCT, NBH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BKG: tl.constexpr,
    BVG: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, LOG2N: tl.constexpr,
    USE_G: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr, DT: tl.constexpr,
):
    """The grad and intra kernels in one persistent kernel (config ``bwd_intra: fused``).

    Each program walks the chunks ``pid, pid + nprog, ...`` (chunk-major within a head) and, per
    chunk, does the grad kernel's work into its own scratch slot ``pid`` and then the intra
    kernel's work from it. The per-chunk gradients (dU, dW, dKd, dQg, dAqk) so live in
    ``nprog`` slots instead of one per chunk (at S1 about 30 MB instead of 1.9 GB), and are
    read back by the program that wrote them, mostly from L2. The barriers order the slot's
    writes before its reads within the block (global stores are visible to the block after
    ``bar.sync``), and the next chunk's writes after the last reads."""
    pid = tl.program_id(0)
    ss = pid.to(tl.int64)
    for i_w in range(pid, NCT * NBH, tl.num_programs(0)):
        i_tg = i_w % NCT
        i_bh = i_w // NCT
        _grad_chunk(h, dh, w, u, do, du, dw, dqg, daqk, dkd, ddec, q, k, e, g, scale, cu_seqlens,
                    chunk_indices, T, NCT, i_tg, i_bh, ss, H, K, V, BT, BKG, BVG, IS_VARLEN, PREC,
                    DT, USE_G)
        tl.debug_barrier()
        _intra_chunk(q, k, e, v, g, beta, gamma, dw, du, dqg, daqk, dkd, ddec,
                     dq, dk, de, dv, dg, dbeta, dgamma, cu_seqlens, chunk_indices, scale, T, NCT,
                     i_tg, i_bh, ss, H, K, V, BT, BK, BV, LOG2N, USE_G, IS_VARLEN, PREC, DT, False)
        tl.debug_barrier()


@triton.jit
def eda_bwd_intra2_kernel(
    q, k, e, v, g, beta, gamma, dw, du, dqg, daqk, dkd, ddec,
    dq, dk, de, dv, dg, dbeta, dgamma, cu_seqlens, chunk_indices, scale, T, NCT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, LOG2N: tl.constexpr, USE_G: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, DT: tl.constexpr,
):
    """Same gradients as ``eda_bwd_intra_kernel`` (config ``bwd_intra: triton2``), with the
    two-block structure of the forward W/U kernel: the 2BT rows are two halves of NH = BT rows,
    Tm = [[R11, 0], [R21, R22]] (R11, R22 by repeated squaring, LOG2N = log2(BT);
    R21 = -R22 A21 R11), and every 2BT x 2BT matrix is kept as its three (or, for Q kappa^T,
    two) non-zero NH x NH blocks. With X = Tm^T dTm (dTm = dW (b e^G kappa)^T + dU (b nu)^T):
        dA11 = -X11 R11^T, dA21 = -X21 R11^T, dA22 = -(X21 R21^T + X22 R22^T),
        X11 = R11^T dR11 + R21^T dR21, X21 = R22^T dR21, X22 = R22^T dR22
    (the upper block dR12 is never needed). Dots on the input tiles take ``DT`` operands
    (16-bit for 16-bit inputs) with float32 accumulation; the solve stays in float32.
    """
    i_tg, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_t, bos, L = _chunk_coords(i_tg, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN)
    sc = i_bh.to(tl.int64) * NCT + i_tg
    NR: tl.constexpr = 2 * BT
    NH: tl.constexpr = BT
    HT: tl.constexpr = BT // 2
    o_h = tl.arange(0, NH)
    ev = (o_h % 2) == 0
    t1 = i_t * BT + o_h // 2
    t2 = t1 + HT
    m1 = t1 < L
    m2 = t2 < L
    tok1 = bos + t1
    tok2 = bos + t2
    o_t = tl.arange(0, BT)
    m_t = (i_t * BT + o_t) < L
    tokq = bos + i_t * BT + o_t
    b_b1 = tl.where(ev, tl.load(gamma + tok1 * H + i_h, mask=m1, other=0.),
                    tl.load(beta + tok1 * H + i_h, mask=m1, other=0.)).to(tl.float32)
    b_b2 = tl.where(ev, tl.load(gamma + tok2 * H + i_h, mask=m2, other=0.),
                    tl.load(beta + tok2 * H + i_h, mask=m2, other=0.)).to(tl.float32)
    m_A = o_h[:, None] > o_h[None, :]
    # a token's query (token t) sees rows s <= 2t + 1
    m_Q1 = o_h[None, :] <= 2 * o_t[:, None] + 1
    m_Q2 = (NH + o_h)[None, :] <= 2 * o_t[:, None] + 1
    if USE_G:
        b_G1, b_gl1 = _row_decay(g, tok1, i_h, ev, m1, H)
        b_G2, b_gl2 = _row_decay(g, tok2, i_h, ev, m2, H)
        b_G2 = b_G2 + b_gl1
        b_gl = b_gl1 + b_gl2
        b_gq = tl.cumsum(tl.load(g + tokq * H + i_h, mask=m_t, other=0.).to(tl.float32), axis=0)
        b_dGn = tl.load(ddec + sc) * tl.exp(b_gl)
    else:
        b_G1 = tl.zeros([NH], dtype=tl.float32)
        b_G2 = tl.zeros([NH], dtype=tl.float32)
        b_gl = tl.sum(tl.zeros([2], dtype=tl.float32), axis=0)
        b_gq = tl.zeros([BT], dtype=tl.float32)
        b_dGn = tl.sum(tl.zeros([2], dtype=tl.float32), axis=0)
    b_eG1 = tl.exp(b_G1)
    b_eG2 = tl.exp(b_G2)
    b_bg1 = b_b1 * b_eG1
    b_bg2 = b_b2 * b_eG2
    p_r1 = (sc * NR + o_h)[:, None]
    p_r2 = (sc * NR + NH + o_h)[:, None]

    # pass 1: the blocks of kappa kappa^T, q kappa^T and dTm (dR12 is not needed)
    b_KK11 = tl.zeros([NH, NH], dtype=tl.float32)
    b_KK21 = tl.zeros([NH, NH], dtype=tl.float32)
    b_KK22 = tl.zeros([NH, NH], dtype=tl.float32)
    b_QK1 = tl.zeros([BT, NH], dtype=tl.float32)
    b_QK2 = tl.zeros([BT, NH], dtype=tl.float32)
    b_dR11 = tl.zeros([NH, NH], dtype=tl.float32)
    b_dR21 = tl.zeros([NH, NH], dtype=tl.float32)
    b_dR22 = tl.zeros([NH, NH], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_k1 = _load_kappa(k, e, tok1, i_h, ev, m1, o_k, m_k, H, K).to(tl.float32)
        b_k2 = _load_kappa(k, e, tok2, i_h, ev, m2, o_k, m_k, H, K).to(tl.float32)
        b_q = tl.load(q + (tokq * H + i_h)[:, None] * K + o_k[None, :],
                      mask=m_t[:, None] & m_k[None, :], other=0.).to(DT)
        b_dw1 = tl.load(dw + p_r1 * K + o_k[None, :], mask=m_k[None, :], other=0.).to(DT)
        b_dw2 = tl.load(dw + p_r2 * K + o_k[None, :], mask=m_k[None, :], other=0.).to(DT)
        b_k1d = b_k1.to(DT)
        b_k2d = b_k2.to(DT)
        b_KK11 += tl.dot(b_k1d, tl.trans(b_k1d), input_precision=PREC)
        b_KK21 += tl.dot(b_k2d, tl.trans(b_k1d), input_precision=PREC)
        b_KK22 += tl.dot(b_k2d, tl.trans(b_k2d), input_precision=PREC)
        b_QK1 += tl.dot(b_q, tl.trans(b_k1d), input_precision=PREC)
        b_QK2 += tl.dot(b_q, tl.trans(b_k2d), input_precision=PREC)
        b_bk1 = (b_k1 * b_bg1[:, None]).to(DT)
        b_bk2 = (b_k2 * b_bg2[:, None]).to(DT)
        b_dR11 += tl.dot(b_dw1, tl.trans(b_bk1), input_precision=PREC)
        b_dR21 += tl.dot(b_dw2, tl.trans(b_bk1), input_precision=PREC)
        b_dR22 += tl.dot(b_dw2, tl.trans(b_bk2), input_precision=PREC)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        b_n1 = tl.load(v + (tok1 * H + i_h)[:, None] * V + o_v[None, :],
                       mask=(m1 & (~ev))[:, None] & m_v[None, :], other=0.).to(tl.float32)
        b_n2 = tl.load(v + (tok2 * H + i_h)[:, None] * V + o_v[None, :],
                       mask=(m2 & (~ev))[:, None] & m_v[None, :], other=0.).to(tl.float32)
        b_du1 = tl.load(du + p_r1 * V + o_v[None, :], mask=m_v[None, :], other=0.).to(DT)
        b_du2 = tl.load(du + p_r2 * V + o_v[None, :], mask=m_v[None, :], other=0.).to(DT)
        b_bn1 = (b_n1 * b_b1[:, None]).to(DT)
        b_bn2 = (b_n2 * b_b2[:, None]).to(DT)
        b_dR11 += tl.dot(b_du1, tl.trans(b_bn1), input_precision=PREC)
        b_dR21 += tl.dot(b_du2, tl.trans(b_bn1), input_precision=PREC)
        b_dR22 += tl.dot(b_du2, tl.trans(b_bn2), input_precision=PREC)

    # A (decayed, masked; An without the strengths) and its inverse by blocks
    b_D11 = tl.exp(tl.where(m_A, b_G1[:, None] - b_G1[None, :], 0.))
    b_D22 = tl.exp(tl.where(m_A, b_G2[:, None] - b_G2[None, :], 0.))
    # every row of the second half comes after every row of the first: G2 - G1 <= 0
    b_D21 = tl.exp(b_G2[:, None] - b_G1[None, :])
    b_An11 = tl.where(m_A, b_KK11 * b_D11, 0.)
    b_An22 = tl.where(m_A, b_KK22 * b_D22, 0.)
    b_An21 = b_KK21 * b_D21
    b_A11 = b_An11 * b_b1[:, None]
    b_A21 = b_An21 * b_b2[:, None]
    b_A22 = b_An22 * b_b2[:, None]
    b_R11 = _unit_lower_inverse(b_A11, o_h, LOG2N, PREC)
    b_R22 = _unit_lower_inverse(b_A22, o_h, LOG2N, PREC)
    b_R21 = -tl.dot(tl.dot(b_R22, b_A21, input_precision=PREC), b_R11, input_precision=PREC)

    # dA = -Tm^T dTm Tm^T on the strictly lower part
    b_X21 = tl.dot(tl.trans(b_R22), b_dR21, input_precision=PREC)
    b_X11 = (tl.dot(tl.trans(b_R11), b_dR11, input_precision=PREC)
             + tl.dot(tl.trans(b_R21), b_dR21, input_precision=PREC))
    b_X22 = tl.dot(tl.trans(b_R22), b_dR22, input_precision=PREC)
    b_dA11 = tl.where(m_A, -tl.dot(b_X11, tl.trans(b_R11), input_precision=PREC), 0.)
    b_dA21 = -tl.dot(b_X21, tl.trans(b_R11), input_precision=PREC)
    b_dA22 = tl.where(m_A, -(tl.dot(b_X21, tl.trans(b_R21), input_precision=PREC)
                             + tl.dot(b_X22, tl.trans(b_R22), input_precision=PREC)), 0.)
    # row gradients: decay (dG, row r gets +, column s gets -) and strengths (db)
    b_M11 = b_dA11 * b_A11
    b_M21 = b_dA21 * b_A21
    b_M22 = b_dA22 * b_A22
    b_dG1 = tl.sum(b_M11, axis=1) - tl.sum(b_M11, axis=0) - tl.sum(b_M21, axis=0)
    b_dG2 = tl.sum(b_M21, axis=1) + tl.sum(b_M22, axis=1) - tl.sum(b_M22, axis=0)
    b_db1 = tl.sum(b_dA11 * b_An11, axis=1)
    b_db2 = tl.sum(b_dA21 * b_An21, axis=1) + tl.sum(b_dA22 * b_An22, axis=1)
    # gradient of kappa kappa^T (symmetrised on the diagonal blocks)
    b_dKK11 = b_dA11 * b_b1[:, None] * b_D11
    b_dKK21 = b_dA21 * b_b2[:, None] * b_D21
    b_dKK22 = b_dA22 * b_b2[:, None] * b_D22
    b_dKK11 = (b_dKK11 + tl.trans(b_dKK11)).to(DT)
    b_dKK22 = (b_dKK22 + tl.trans(b_dKK22)).to(DT)
    b_dKK12 = tl.trans(b_dKK21).to(DT)
    b_dKK21 = b_dKK21.to(DT)

    # the output's q kappa^T term
    b_Dq1 = tl.exp(tl.where(m_Q1, b_gq[:, None] - b_G1[None, :], 0.))
    b_Dq2 = tl.exp(tl.where(m_Q2, b_gq[:, None] - b_G2[None, :], 0.))
    p_da = daqk + (sc * BT + o_t)[:, None] * NR
    b_dAq1 = tl.where(m_Q1, tl.load(p_da + o_h[None, :]).to(tl.float32), 0.)
    b_dAq2 = tl.where(m_Q2, tl.load(p_da + NH + o_h[None, :]).to(tl.float32), 0.)
    b_Pq1 = b_dAq1 * b_QK1 * scale * b_Dq1
    b_Pq2 = b_dAq2 * b_QK2 * scale * b_Dq2
    b_dgq = tl.sum(b_Pq1, axis=1) + tl.sum(b_Pq2, axis=1)
    b_dG1 -= tl.sum(b_Pq1, axis=0)
    b_dG2 -= tl.sum(b_Pq2, axis=0)
    b_E1 = b_dAq1 * b_Dq1 * scale                         # gradient of q kappa^T (unscaled q)
    b_E2 = b_dAq2 * b_Dq2 * scale
    b_E1d = b_E1.to(DT)
    b_E2d = b_E2.to(DT)
    b_E1t = tl.trans(b_E1).to(DT)
    b_E2t = tl.trans(b_E2).to(DT)
    b_R11t = tl.trans(b_R11).to(DT)
    b_R21t = tl.trans(b_R21).to(DT)
    b_R22t = tl.trans(b_R22).to(DT)
    b_ekd1 = tl.exp(b_gl - b_G1)
    b_ekd2 = tl.exp(b_gl - b_G2)
    b_egq = tl.exp(b_gq)
    b_dbg1 = tl.zeros([NH], dtype=tl.float32)
    b_dbg2 = tl.zeros([NH], dtype=tl.float32)

    # pass 2: dk, de, dq per K tile
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_k1 = _load_kappa(k, e, tok1, i_h, ev, m1, o_k, m_k, H, K).to(tl.float32)
        b_k2 = _load_kappa(k, e, tok2, i_h, ev, m2, o_k, m_k, H, K).to(tl.float32)
        b_q = tl.load(q + (tokq * H + i_h)[:, None] * K + o_k[None, :],
                      mask=m_t[:, None] & m_k[None, :], other=0.).to(tl.float32)
        b_dw1 = tl.load(dw + p_r1 * K + o_k[None, :], mask=m_k[None, :], other=0.).to(DT)
        b_dw2 = tl.load(dw + p_r2 * K + o_k[None, :], mask=m_k[None, :], other=0.).to(DT)
        b_k1d = b_k1.to(DT)
        b_k2d = b_k2.to(DT)
        b_qd = b_q.to(DT)
        b_dbk1 = (tl.dot(b_R11t, b_dw1, input_precision=PREC)
                  + tl.dot(b_R21t, b_dw2, input_precision=PREC))
        b_dbk2 = tl.dot(b_R22t, b_dw2, input_precision=PREC)
        b_dbg1 += tl.sum(b_dbk1 * b_k1, axis=1)
        b_dbg2 += tl.sum(b_dbk2 * b_k2, axis=1)
        b_dk1 = b_dbk1 * b_bg1[:, None]
        b_dk2 = b_dbk2 * b_bg2[:, None]
        b_dk1 += tl.dot(b_dKK11, b_k1d, input_precision=PREC)
        b_dk1 += tl.dot(b_dKK12, b_k2d, input_precision=PREC)
        b_dk2 += tl.dot(b_dKK21, b_k1d, input_precision=PREC)
        b_dk2 += tl.dot(b_dKK22, b_k2d, input_precision=PREC)
        b_dk1 += tl.dot(b_E1t, b_qd, input_precision=PREC)
        b_dk2 += tl.dot(b_E2t, b_qd, input_precision=PREC)
        b_dq = tl.dot(b_E1d, b_k1d, input_precision=PREC) + tl.dot(b_E2d, b_k2d, input_precision=PREC)
        b_dqg = tl.load(dqg + (sc * BT + o_t)[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0.).to(tl.float32)
        b_dq += b_dqg * (scale * b_egq)[:, None]
        b_dgq += tl.sum(b_dqg * b_q, axis=1) * scale * b_egq
        b_dkd1 = tl.load(dkd + p_r1 * K + o_k[None, :], mask=m_k[None, :], other=0.).to(tl.float32)
        b_dkd2 = tl.load(dkd + p_r2 * K + o_k[None, :], mask=m_k[None, :], other=0.).to(tl.float32)
        b_dk1 += b_dkd1 * b_ekd1[:, None]
        b_dk2 += b_dkd2 * b_ekd2[:, None]
        b_c1 = tl.sum(b_dkd1 * b_k1, axis=1) * b_ekd1
        b_c2 = tl.sum(b_dkd2 * b_k2, axis=1) * b_ekd2
        b_dGn += tl.sum(b_c1, axis=0) + tl.sum(b_c2, axis=0)
        b_dG1 -= b_c1
        b_dG2 -= b_c2
        tl.store(dq + (tokq * H + i_h)[:, None] * K + o_k[None, :], b_dq.to(dq.dtype.element_ty),
                 mask=m_t[:, None] & m_k[None, :])
        p_k1 = (tok1 * H + i_h)[:, None] * K + o_k[None, :]
        p_k2 = (tok2 * H + i_h)[:, None] * K + o_k[None, :]
        tl.store(de + p_k1, b_dk1.to(de.dtype.element_ty), mask=(m1 & ev)[:, None] & m_k[None, :])
        tl.store(dk + p_k1, b_dk1.to(dk.dtype.element_ty), mask=(m1 & (~ev))[:, None] & m_k[None, :])
        tl.store(de + p_k2, b_dk2.to(de.dtype.element_ty), mask=(m2 & ev)[:, None] & m_k[None, :])
        tl.store(dk + p_k2, b_dk2.to(dk.dtype.element_ty), mask=(m2 & (~ev))[:, None] & m_k[None, :])
    b_db1 += b_dbg1 * b_eG1
    b_db2 += b_dbg2 * b_eG2
    b_dG1 += b_dbg1 * b_bg1
    b_dG2 += b_dbg2 * b_bg2

    # pass 3: dv per V tile
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        p_v1 = (tok1 * H + i_h)[:, None] * V + o_v[None, :]
        p_v2 = (tok2 * H + i_h)[:, None] * V + o_v[None, :]
        b_n1 = tl.load(v + p_v1, mask=(m1 & (~ev))[:, None] & m_v[None, :], other=0.).to(tl.float32)
        b_n2 = tl.load(v + p_v2, mask=(m2 & (~ev))[:, None] & m_v[None, :], other=0.).to(tl.float32)
        b_du1 = tl.load(du + p_r1 * V + o_v[None, :], mask=m_v[None, :], other=0.).to(DT)
        b_du2 = tl.load(du + p_r2 * V + o_v[None, :], mask=m_v[None, :], other=0.).to(DT)
        b_dn1 = (tl.dot(b_R11t, b_du1, input_precision=PREC)
                 + tl.dot(b_R21t, b_du2, input_precision=PREC))
        b_dn2 = tl.dot(b_R22t, b_du2, input_precision=PREC)
        b_db1 += tl.sum(b_dn1 * b_n1, axis=1)
        b_db2 += tl.sum(b_dn2 * b_n2, axis=1)
        tl.store(dv + p_v1, (b_dn1 * b_b1[:, None]).to(dv.dtype.element_ty),
                 mask=(m1 & (~ev))[:, None] & m_v[None, :])
        tl.store(dv + p_v2, (b_dn2 * b_b2[:, None]).to(dv.dtype.element_ty),
                 mask=(m2 & (~ev))[:, None] & m_v[None, :])

    # rows -> tokens: half 1 holds tokens 0..BT/2-1 of the chunk, half 2 the others;
    # (erase, write) rows of a token are consecutive
    o_2 = tl.arange(0, 2)
    o_s = tl.arange(0, HT)
    ts1 = i_t * BT + o_s
    ts2 = ts1 + HT
    ms1 = ts1 < L
    ms2 = ts2 < L
    p_s1 = (bos + ts1) * H + i_h
    p_s2 = (bos + ts2) * H + i_h
    b_db1r = tl.reshape(b_db1, [HT, 2])
    b_db2r = tl.reshape(b_db2, [HT, 2])
    tl.store(dgamma + p_s1, tl.sum(tl.where(o_2[None, :] == 0, b_db1r, 0.), axis=1)
             .to(dgamma.dtype.element_ty), mask=ms1)
    tl.store(dbeta + p_s1, tl.sum(tl.where(o_2[None, :] == 1, b_db1r, 0.), axis=1)
             .to(dbeta.dtype.element_ty), mask=ms1)
    tl.store(dgamma + p_s2, tl.sum(tl.where(o_2[None, :] == 0, b_db2r, 0.), axis=1)
             .to(dgamma.dtype.element_ty), mask=ms2)
    tl.store(dbeta + p_s2, tl.sum(tl.where(o_2[None, :] == 1, b_db2r, 0.), axis=1)
             .to(dbeta.dtype.element_ty), mask=ms2)
    if USE_G:
        # the queries' part (over all BT tokens) split into the two halves
        b_dgq1 = tl.sum(tl.where(o_t[None, :] == o_s[:, None], b_dgq[None, :], 0.), axis=1)
        b_dgq2 = tl.sum(tl.where(o_t[None, :] == (o_s + HT)[:, None], b_dgq[None, :], 0.), axis=1)
        b_dgc1 = tl.sum(tl.reshape(b_dG1, [HT, 2]), axis=1) + b_dgq1
        b_dgc2 = tl.sum(tl.reshape(b_dG2, [HT, 2]), axis=1) + b_dgq2
        b_dgc2 += tl.where(o_s == HT - 1, b_dGn, 0.)
        # g -> cumulative gc inside the chunk: dg_t = sum_{t' >= t} dgc_t'
        b_s2 = tl.sum(b_dgc2, axis=0)
        b_dg2 = b_s2 - tl.cumsum(b_dgc2, axis=0) + b_dgc2
        b_dg1 = tl.sum(b_dgc1, axis=0) - tl.cumsum(b_dgc1, axis=0) + b_dgc1 + b_s2
        tl.store(dg + p_s1, b_dg1.to(dg.dtype.element_ty), mask=ms1)
        tl.store(dg + p_s2, b_dg2.to(dg.dtype.element_ty), mask=ms2)
