"""Validation of ``chunk_eda`` arguments: every bad input gets an error naming the argument."""

from __future__ import annotations

import torch

from eda_tune.errors import EdaInputError, EdaTypeError
from eda_tune.problem import DTYPE_NAMES, Problem

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise EdaTypeError(f"{name} must be a torch.Tensor but got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise EdaTypeError(f"{name} must have a floating dtype in "
                           f"{[DTYPE_NAMES[d] for d in FLOAT_DTYPES]} but got {x.dtype}")
    return x


def _shape(name: str, x: torch.Tensor, expected: tuple[int, ...], names: str) -> None:
    if x.dim() != len(expected):
        raise EdaInputError(f"{name} must have rank {len(expected)} [{names}] = {list(expected)} "
                            f"but got shape {list(x.shape)}")
    if tuple(x.shape) != expected:
        raise EdaInputError(f"{name} must have shape [{names}] = {list(expected)} but got {list(x.shape)}")


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim, in x's precision (FLA's l2norm)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


_FLOAT_SET = frozenset(FLOAT_DTYPES)
_PROBLEMS: dict[tuple[object, ...], Problem] = {}


def _fast_path(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, g: torch.Tensor | None,
    beta: torch.Tensor, gamma: torch.Tensor, scale: float | None, initial_state: torch.Tensor | None,
    output_final_state: bool, use_qk_l2norm_in_kernel: bool,
) -> tuple[Problem, float] | None:
    """The common call (no cu_seqlens), checked with fewer Python calls; None sends the call to the
    full validation (which then raises its usual error, or accepts a case this path does not cover).

    Checks exactly what the full path checks for such a call, and reuses the Problem of an earlier
    call of the same shapes and options (building one costs several microseconds)."""
    T_ = torch.Tensor
    if not (type(q) is T_ and type(k) is T_ and type(v) is T_ and type(e) is T_ and type(beta) is T_
            and type(gamma) is T_ and (g is None or type(g) is T_)
            and (initial_state is None or type(initial_state) is T_)):
        return None
    if output_final_state is not True and output_final_state is not False:
        return None
    if use_qk_l2norm_in_kernel is not True and use_qk_l2norm_in_kernel is not False:
        return None
    dt = q.dtype
    if dt not in _FLOAT_SET or k.dtype is not dt or v.dtype is not dt or e.dtype is not dt \
            or beta.dtype not in _FLOAT_SET or gamma.dtype not in _FLOAT_SET \
            or (g is not None and g.dtype not in _FLOAT_SET):
        return None
    shape = q.shape
    if len(shape) != 4 or k.shape != shape or e.shape != shape:
        return None
    B, T, H, K = shape
    vs = v.shape
    if len(vs) != 4 or vs[0] != B or vs[1] != T or vs[2] != H:
        return None
    V = vs[3]
    if B < 1 or T < 1 or H < 1 or K < 1 or V < 1:
        return None
    bth = shape[:3]
    if beta.shape != bth or gamma.shape != bth or (g is not None and g.shape != bth):
        return None
    device = q.device
    if k.device != device or v.device != device or e.device != device or beta.device != device \
            or gamma.device != device or (g is not None and g.device != device):
        return None
    if initial_state is not None:
        if initial_state.dtype not in _FLOAT_SET or initial_state.device != device \
                or initial_state.shape != (B, H, K, V):
            return None
    if scale is None:
        scale_f = K ** -0.5
    elif type(scale) is float and 0.0 < scale < float("inf"):
        scale_f = scale
    else:
        return None
    training = torch.is_grad_enabled() and (
        q.requires_grad or k.requires_grad or v.requires_grad or e.requires_grad or beta.requires_grad
        or gamma.requires_grad or (g is not None and g.requires_grad)
        or (initial_state is not None and initial_state.requires_grad))
    key = (B, T, H, K, V, dt, g is not None, initial_state is not None, output_final_state,
           use_qk_l2norm_in_kernel, training, device.type)
    problem = _PROBLEMS.get(key)
    if problem is None:
        problem = Problem(B=B, T=T, H=H, K=K, V=V, dtype=DTYPE_NAMES[dt], gate=g is not None, num_seqs=0,
                          initial_state=initial_state is not None, final_state=output_final_state,
                          l2norm=use_qk_l2norm_in_kernel, training=training, device=device.type)
        if len(_PROBLEMS) > 4096:  # a model with ever-changing shapes must not grow this forever
            _PROBLEMS.clear()
        _PROBLEMS[key] = problem
    return problem, scale_f


def validate_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, g: torch.Tensor | None,
    beta: torch.Tensor, gamma: torch.Tensor, scale: float | None, initial_state: torch.Tensor | None,
    output_final_state: bool, cu_seqlens: torch.Tensor | None, use_qk_l2norm_in_kernel: bool = False,
) -> tuple[Problem, float, list[int] | None]:
    """Check every argument of ``chunk_eda``; return the Problem, the scale and cu_seqlens as a list."""
    if cu_seqlens is None:
        fast = _fast_path(q, k, v, e, g, beta, gamma, scale, initial_state, output_final_state,
                          use_qk_l2norm_in_kernel)
        if fast is not None:
            return fast[0], fast[1], None
    q = _tensor("q", q)
    if q.dim() != 4:
        raise EdaInputError(f"q must have rank 4 [B, T, H, K] but got shape {list(q.shape)}")
    B, T, H, K = q.shape
    if min(B, T, H, K) < 1:
        raise EdaInputError(f"q must have non-empty dims [B, T, H, K] but got shape {list(q.shape)}")
    for name, x in (("k", k), ("e", e)):
        _shape(name, _tensor(name, x), (B, T, H, K), "B, T, H, K")
    v = _tensor("v", v)
    if v.dim() != 4 or tuple(v.shape[:3]) != (B, T, H) or v.shape[3] < 1:
        raise EdaInputError(f"v must have shape [B, T, H, V] = [{B}, {T}, {H}, V] but got {list(v.shape)}")
    V = v.shape[3]
    for name, x in (("k", k), ("e", e), ("v", v)):
        if x.dtype != q.dtype:
            raise EdaTypeError(f"{name} must have q's dtype {q.dtype} but got {x.dtype}")
    for name, x in (("beta", beta), ("gamma", gamma)):
        _shape(name, _tensor(name, x), (B, T, H), "B, T, H")
    if g is not None:
        _shape("g", _tensor("g", g), (B, T, H), "B, T, H")
    device = q.device
    others: tuple[tuple[str, torch.Tensor | None], ...] = (
        ("k", k), ("v", v), ("e", e), ("g", g), ("beta", beta), ("gamma", gamma), ("initial_state", initial_state))
    for name, other in others:
        if other is not None and other.device != device:
            raise EdaInputError(f"{name} must be on q's device {device} but is on {other.device}")
    if scale is None:
        scale = K ** -0.5
    elif isinstance(scale, bool) or not isinstance(scale, int | float):
        raise EdaTypeError(f"scale must be a float or None but got {type(scale).__name__}")
    elif not scale > 0 or scale != scale or scale == float("inf"):
        raise EdaInputError(f"scale must be a finite number > 0 but got {scale}")
    if not isinstance(output_final_state, bool):
        raise EdaTypeError(f"output_final_state must be a bool but got {type(output_final_state).__name__}")
    if not isinstance(use_qk_l2norm_in_kernel, bool):
        raise EdaTypeError(f"use_qk_l2norm_in_kernel must be a bool but got "
                           f"{type(use_qk_l2norm_in_kernel).__name__}")

    seqlens: list[int] | None = None
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, torch.Tensor):
            raise EdaTypeError(f"cu_seqlens must be a torch.Tensor of int32/int64 but got "
                               f"{type(cu_seqlens).__name__}")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise EdaTypeError(f"cu_seqlens must have dtype int32 or int64 but got {cu_seqlens.dtype}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise EdaInputError(f"cu_seqlens must be 1-D with N + 1 >= 2 entries but got shape "
                                f"{list(cu_seqlens.shape)}")
        if B != 1:
            raise EdaInputError(f"with cu_seqlens the batch size B must be 1 (sequences are packed "
                                f"along T) but got B = {B}")
        seqlens = [int(x) for x in cu_seqlens.tolist()]
        if seqlens[0] != 0:
            raise EdaInputError(f"cu_seqlens must start at 0 but starts at {seqlens[0]}")
        if seqlens[-1] != T:
            raise EdaInputError(f"cu_seqlens must end at T = {T} but ends at {seqlens[-1]}")
        bad = [i for i in range(1, len(seqlens)) if seqlens[i] <= seqlens[i - 1]]
        if bad:
            i = bad[0]
            raise EdaInputError(f"cu_seqlens must be strictly increasing but cu_seqlens[{i}] = "
                                f"{seqlens[i]} <= cu_seqlens[{i - 1}] = {seqlens[i - 1]}")
    N = len(seqlens) - 1 if seqlens is not None else B
    if initial_state is not None:
        _tensor("initial_state", initial_state)
        if initial_state.dim() != 4 or tuple(initial_state.shape) != (N, H, K, V):
            raise EdaInputError(f"initial_state must have shape [N, H, K, V] = [{N}, {H}, {K}, {V}] "
                                f"(N = {'len(cu_seqlens) - 1' if seqlens is not None else 'B'}) "
                                f"but got {list(initial_state.shape)}")
    training = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, e, g, beta, gamma, initial_state))
    problem = Problem(B=B, T=T, H=H, K=K, V=V, dtype=DTYPE_NAMES[q.dtype], gate=g is not None,
                      num_seqs=N if seqlens is not None else 0, initial_state=initial_state is not None,
                      final_state=output_final_state, l2norm=use_qk_l2norm_in_kernel, training=training,
                      device=device.type)
    return problem, float(scale), seqlens
