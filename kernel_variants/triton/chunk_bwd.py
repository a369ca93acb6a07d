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

from kernel_variants.triton.chunk_fwd import _chunk_coords, _load_kappa, _row_decay


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
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int32)
        L = tl.load(cu_seqlens + i_n + 1).to(tl.int32) - bos
        sc0 = i_h.to(tl.int64) * NCT + tl.load(chunk_offsets + i_n).to(tl.int64)
    else:
        bos = i_n * T
        L = T
        sc0 = i_nh.to(tl.int64) * NCT
    bos = bos.to(tl.int64)
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
def eda_bwd_intra_kernel(
    q, k, e, v, g, beta, gamma, dw, du, dqg, daqk, dkd, ddec,
    dq, dk, de, dv, dg, dbeta, dgamma, cu_seqlens, chunk_indices, scale, T, NCT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, LOG2N: tl.constexpr, USE_G: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, DT: tl.constexpr,
):
    """Gradients of the inputs of one chunk from those of W, U, Qg, Aqk, Kd and the chunk decay.

    Recomputes A and Tm = (I + A)^-1 (on the whole 2BT x 2BT block), then
    dA = -Tm^T dTm Tm^T on the strict lower part, with dTm = dW (b e^G kappa)^T + dU (b nu)^T;
    row gradients of the decay and strengths are folded to tokens in registers (the decay's
    cumulative sum is undone by a reverse cumulative sum).
    """
    i_tg, i_bh = tl.program_id(0), tl.program_id(1)
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
    p_rows = (sc * NR + o_r)[:, None]

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
        b_dw = tl.load(dw + p_rows * K + o_k[None, :], mask=m_k[None, :], other=0.)
        b_KK += tl.dot(b_kap.to(DT), tl.trans(b_kap.to(DT)), input_precision=PREC)
        b_QK += tl.dot(b_q.to(DT), tl.trans(b_kap.to(DT)), input_precision=PREC)
        b_dR += tl.dot(b_dw, tl.trans(b_kap * b_bg[:, None]), input_precision=PREC)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        b_nu = tl.load(v + (tok * H + i_h)[:, None] * V + o_v[None, :],
                       mask=(m_r & (~ev))[:, None] & m_v[None, :], other=0.).to(tl.float32)
        b_du = tl.load(du + p_rows * V + o_v[None, :], mask=m_v[None, :], other=0.)
        b_dR += tl.dot(b_du, tl.trans(b_nu * b_b[:, None]), input_precision=PREC)

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

    b_dA_qk = tl.load(daqk + (sc * BT + o_t)[:, None] * NR + o_r[None, :])
    b_dA_qk = tl.where(m_Q, b_dA_qk, 0.)
    b_Aqk = b_QK * scale * b_Dq
    b_Pq = b_dA_qk * b_Aqk
    b_dgq = tl.sum(b_Pq, axis=1)
    b_dG -= tl.sum(b_Pq, axis=0)
    b_E = b_dA_qk * b_Dq * scale                          # gradient of q kappa^T (unscaled q)
    b_dbg = tl.zeros([NR], dtype=tl.float32)

    # pass 2: dk, de, dq per K tile
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_kap = _load_kappa(k, e, tok, i_h, ev, m_r, o_k, m_k, H, K).to(tl.float32)
        b_q = tl.load(q + (tokq * H + i_h)[:, None] * K + o_k[None, :],
                      mask=m_t[:, None] & m_k[None, :], other=0.).to(tl.float32)
        b_dw = tl.load(dw + p_rows * K + o_k[None, :], mask=m_k[None, :], other=0.)
        b_dbk = tl.dot(b_RT, b_dw, input_precision=PREC)
        b_dbg += tl.sum(b_dbk * b_kap, axis=1)
        b_dkap = b_dbk * b_bg[:, None]
        b_dkap += tl.dot(b_dKKs, b_kap, input_precision=PREC)
        b_dkap += tl.dot(tl.trans(b_E), b_q, input_precision=PREC)
        b_dq = tl.dot(b_E, b_kap, input_precision=PREC)
        b_dqg = tl.load(dqg + (sc * BT + o_t)[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0.)
        b_dq += b_dqg * (scale * b_egq)[:, None]
        b_dgq += tl.sum(b_dqg * b_q, axis=1) * scale * b_egq
        b_dkd = tl.load(dkd + p_rows * K + o_k[None, :], mask=m_k[None, :], other=0.)
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
        b_du = tl.load(du + p_rows * V + o_v[None, :], mask=m_v[None, :], other=0.)
        b_dnu = tl.dot(b_RT, b_du, input_precision=PREC)
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
