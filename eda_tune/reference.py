"""The ground truth: EDA's recurrence, step by step, in float64 (docs: EDA_MATH.md)."""

from __future__ import annotations

import torch

from eda_tune.inputs import l2norm, validate_inputs


def _recurrence(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, g: torch.Tensor | None,
                beta: torch.Tensor, gamma: torch.Tensor, scale: float, S: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, e [B, T, H, K], v [B, T, H, V] (float64); S [B, H, K, V]. Returns o [B, T, H, V], S."""
    outs = []
    for t in range(q.shape[1]):
        if g is not None:
            S = S * g[:, t].exp()[..., None, None]
        e_t, k_t = e[:, t], k[:, t]
        S = S - gamma[:, t][..., None, None] * e_t[..., None] * torch.einsum("bhk,bhkv->bhv", e_t, S)[:, :, None]
        err = v[:, t] - torch.einsum("bhk,bhkv->bhv", k_t, S)
        S = S + beta[:, t][..., None, None] * k_t[..., None] * err[:, :, None]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    return torch.stack(outs, dim=1), S


def naive_recurrent_eda(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, g: torch.Tensor | None,
    beta: torch.Tensor, gamma: torch.Tensor, scale: float | None = None,
    initial_state: torch.Tensor | None = None, output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None, use_qk_l2norm_in_kernel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """EDA computed token by token in float64 (differentiable; slow: a Python loop over T).

    q, k, e [B, T, H, K]; v [B, T, H, V]; g, beta, gamma [B, T, H]; initial_state [N, H, K, V].
    Returns o [B, T, H, V] in v's dtype and, if asked, the final state [N, H, K, V] in float32
    (float64 when v is float64, so that gradients can be checked at full precision).
    """
    problem, scale, seqlens = validate_inputs(q, k, v, e, g, beta, gamma, scale, initial_state,
                                              output_final_state, cu_seqlens, use_qk_l2norm_in_kernel)
    f64 = torch.float64
    q, k, v, e, beta, gamma = (x.to(f64) for x in (q, k, v, e, beta, gamma))
    g = g.to(f64) if g is not None else None
    if use_qk_l2norm_in_kernel:
        q, k, e = l2norm(q), l2norm(k), l2norm(e)
    B, T, H, K = q.shape
    V = v.shape[-1]
    h0 = (initial_state.to(f64) if initial_state is not None
          else q.new_zeros(problem.N, H, K, V))
    if seqlens is None:
        o, S = _recurrence(q, k, v, e, g, beta, gamma, scale, h0)
    else:
        outs, finals = [], []
        for i in range(len(seqlens) - 1):
            sl = slice(seqlens[i], seqlens[i + 1])
            o_i, S_i = _recurrence(q[:, sl], k[:, sl], v[:, sl], e[:, sl], None if g is None else g[:, sl],
                                   beta[:, sl], gamma[:, sl], scale, h0[i:i + 1])
            outs.append(o_i)
            finals.append(S_i)
        o, S = torch.cat(outs, dim=1), torch.cat(finals, dim=0)
    out_dtype = problem.torch_dtype
    final = None
    if output_final_state:
        final = S if out_dtype == f64 else S.to(torch.float32)
    return o.to(out_dtype), final


def naive_recurrent_gated_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None, beta: torch.Tensor,
    scale: float, initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated DeltaNet in float64, written independently of EDA (EDA with gamma = 0 must equal it)."""
    q, k, v, beta = (x.to(torch.float64) for x in (q, k, v, beta))
    B, T, H, K = q.shape
    V = v.shape[-1]
    S = initial_state.to(torch.float64) if initial_state is not None else q.new_zeros(B, H, K, V)
    o = q.new_zeros(B, T, H, V)
    for t in range(T):
        for b in range(B):
            for h in range(H):
                s = S[b, h]
                if g is not None:
                    s = s * torch.exp(g[b, t, h].to(torch.float64))
                kt = k[b, t, h]
                s = s + beta[b, t, h] * torch.outer(kt, v[b, t, h] - kt @ s)
                o[b, t, h] = s.T @ (q[b, t, h] * scale)
                S[b, h] = s
    return o, S
