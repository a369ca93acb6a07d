"""Checking a backend against the float64 reference: the one implementation the tests, the tuner
and ``eda-tune check`` share. Inputs are drawn the way models draw them (EDA_MATH.md, "Numerics")."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from eda_tune.problem import Problem
from eda_tune.reference import naive_recurrent_eda

#: Relative-norm tolerances against the float64 recurrence, by input dtype.
FWD_TOL = {"float64": 1e-9, "float32": 2e-3, "bfloat16": 2e-2, "float16": 1e-2}
GRAD_TOL = {"float64": 1e-8, "float32": 5e-3, "bfloat16": 6e-2, "float16": 3e-2}

INPUT_NAMES = ("q", "k", "v", "e", "g", "beta", "gamma", "initial_state")


def split_lengths(total: int, n: int, generator: torch.Generator) -> list[int]:
    """cu_seqlens of ``n`` uneven sequences covering ``total`` tokens (each at least 1)."""
    if n > total:
        raise ValueError(f"cannot split T = {total} into {n} non-empty sequences")
    cuts = torch.randperm(total - 1, generator=generator)[: n - 1] + 1
    return [0, *sorted(int(c) for c in cuts), total]


def make_inputs(problem: Problem, seed: int = 0, device: str | torch.device | None = None,
                gamma_zero: bool = False, requires_grad: bool = False) -> dict[str, Any]:
    """Fresh random inputs for ``problem`` (never zeros): k and e L2-normalised, beta and gamma in
    (0, 1), g = logsigmoid(x) / 16. Returns the keyword arguments of ``chunk_eda``."""
    gen = torch.Generator().manual_seed(seed)
    B, T, H, K, V = problem.B, problem.T, problem.H, problem.K, problem.V
    dtype = problem.torch_dtype
    dev = torch.device(device if device is not None else problem.device)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float32)

    q = rand(B, T, H, K)
    k = F.normalize(rand(B, T, H, K), dim=-1)
    e = F.normalize(rand(B, T, H, K), dim=-1)
    v = rand(B, T, H, V)
    beta = torch.rand(B, T, H, generator=gen) * 0.98 + 0.01
    gamma = torch.zeros(B, T, H) if gamma_zero else torch.rand(B, T, H, generator=gen) * 0.98 + 0.01
    g = F.logsigmoid(rand(B, T, H)) / 16 if problem.gate else None
    out: dict[str, Any] = {
        "q": q.to(dtype), "k": k.to(dtype), "v": v.to(dtype), "e": e.to(dtype), "g": g,
        "beta": beta, "gamma": gamma, "initial_state": None,
        "output_final_state": problem.final_state, "cu_seqlens": None,
        "use_qk_l2norm_in_kernel": problem.l2norm,
    }
    if problem.l2norm:  # un-normalised inputs, so that the option matters
        out["k"] = (k * (1 + torch.rand(B, T, H, 1, generator=gen) * 3)).to(dtype)
        out["e"] = (e * (1 + torch.rand(B, T, H, 1, generator=gen) * 3)).to(dtype)
    if problem.varlen:
        out["cu_seqlens"] = torch.tensor(split_lengths(T, problem.num_seqs, gen), dtype=torch.int32)
    if problem.initial_state:
        out["initial_state"] = rand(problem.N, H, K, V) * 0.5
    for name in ("q", "k", "v", "e", "g", "beta", "gamma", "initial_state", "cu_seqlens"):
        x = out[name]
        if isinstance(x, torch.Tensor):
            x = x.to(dev)
            if requires_grad and name != "cu_seqlens":
                x.requires_grad_(True)
            out[name] = x
    return out


def upcast(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A float64 copy of the inputs (leaves requiring grad when the originals do)."""
    out = dict(inputs)
    for name in INPUT_NAMES:
        x = inputs.get(name)
        if isinstance(x, torch.Tensor):
            out[name] = x.detach().to(torch.float64).requires_grad_(x.requires_grad)
    return out


def rel_error(out: torch.Tensor | None, ref: torch.Tensor | None) -> float:
    """||out - ref|| / ||ref|| in float64; inf for NaN/Inf, a missing tensor or a shape mismatch."""
    if out is None or ref is None:
        return 0.0 if out is None and ref is None else math.inf
    if out.shape != ref.shape:
        return math.inf
    a, b = out.detach().to(torch.float64), ref.detach().to(torch.float64).to(out.device)
    if not torch.isfinite(a).all():
        return math.inf
    denom = b.norm().item()
    return (a - b).norm().item() / (denom if denom > 0 else 1.0)


def first_mismatches(out: torch.Tensor, ref: torch.Tensor, tol: float, n: int = 3) -> str:
    """A short description of the first elements that differ most."""
    a, b = out.detach().double().cpu(), ref.detach().double().cpu()
    diff = (a - b).abs().nan_to_num(math.inf)
    scale = b.abs().max().item() or 1.0
    idx = (diff > tol * scale).nonzero()[:n]
    return "; ".join(f"{tuple(i.tolist())}: got {a[tuple(i)].item():.5g}, want {b[tuple(i)].item():.5g}"
                     for i in idx)


@dataclass
class CheckResult:
    """Errors of one backend run against the reference: ``errors`` maps o, final_state and d<input>."""

    errors: dict[str, float] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(self.errors[n] <= self.tolerances[n] for n in self.errors)

    @property
    def reason(self) -> str:
        bad = [n for n in self.errors if not self.errors[n] <= self.tolerances[n]]
        return "; ".join(f"{n}: rel error {self.errors[n]:.3g} > {self.tolerances[n]:.3g}"
                         + (f" ({self.details[n]})" if self.details.get(n) else "") for n in bad)

    @property
    def max_ratio(self) -> float:
        return max((self.errors[n] / self.tolerances[n] for n in self.errors), default=0.0)


def _outputs_loss(o: torch.Tensor, final: torch.Tensor | None, do: torch.Tensor,
                  dfinal: torch.Tensor | None) -> torch.Tensor:
    loss = (o.to(torch.float64) * do.to(o.device, torch.float64)).sum()
    if final is not None and dfinal is not None:
        loss = loss + (final.to(torch.float64) * dfinal.to(final.device, torch.float64)).sum()
    return loss


def reference_outputs(inputs: Mapping[str, Any], grads: bool = False, seed: int = 0
                      ) -> dict[str, torch.Tensor | None]:
    """The float64 reference of ``inputs``: o, final_state and, with ``grads``, d<input>."""
    ref_in = upcast(inputs)
    o, final = naive_recurrent_eda(**ref_in)
    out: dict[str, torch.Tensor | None] = {"o": o.detach(), "final_state": None if final is None else final.detach()}
    if grads:
        gen = torch.Generator().manual_seed(seed + 7)
        do = torch.randn(o.shape, generator=gen, dtype=torch.float64)
        dfinal = torch.randn(final.shape, generator=gen, dtype=torch.float64) if final is not None else None
        out["do"], out["dfinal"] = do, dfinal
        leaves = [n for n in INPUT_NAMES if isinstance(ref_in.get(n), torch.Tensor) and ref_in[n].requires_grad]
        gs = torch.autograd.grad(_outputs_loss(o, final, do, dfinal), [ref_in[n] for n in leaves])
        out.update({f"d{n}": gr for n, gr in zip(leaves, gs)})
    return out


def check_outputs(problem: Problem, inputs: Mapping[str, Any], o: torch.Tensor, final: torch.Tensor | None,
                  reference: Mapping[str, torch.Tensor | None]) -> CheckResult:
    """Compare a run's outputs (and, where the reference has them, the inputs' .grad) with it."""
    res = CheckResult()
    tol = FWD_TOL[problem.dtype]
    for name, got in (("o", o), ("final_state", final)):
        want = reference.get(name)
        if want is None and got is None:
            continue
        res.errors[name] = rel_error(got, want)
        res.tolerances[name] = tol
        if got is not None and want is not None and not res.errors[name] <= tol and got.shape == want.shape:
            res.details[name] = first_mismatches(got, want, tol)
    for n in INPUT_NAMES:
        want = reference.get(f"d{n}")
        if want is None:
            continue
        x = inputs.get(n)
        got = x.grad if isinstance(x, torch.Tensor) else None
        res.errors[f"d{n}"] = rel_error(got, want)
        res.tolerances[f"d{n}"] = GRAD_TOL[problem.dtype]
    return res


def run_and_check(fn: Any, problem: Problem, seed: int = 0, grads: bool | None = None,
                  reference: Mapping[str, torch.Tensor | None] | None = None,
                  inputs: Mapping[str, Any] | None = None) -> CheckResult:
    """Run ``fn`` (chunk_eda-like, keyword inputs) on fresh inputs and check it, with backward
    when ``grads`` (default: problem.training). ``reference`` may be precomputed for these inputs."""
    grads = problem.training if grads is None else grads
    if inputs is None:
        inputs = make_inputs(problem, seed, requires_grad=grads)
    if reference is None:
        reference = reference_outputs(inputs, grads=grads, seed=seed)
    o, final = fn(**inputs)
    if grads:
        do, dfinal = reference["do"], reference.get("dfinal")
        assert do is not None
        _outputs_loss(o, final, do, dfinal).backward()
    return check_outputs(problem, inputs, o, final, reference)


def grow_until_valid(small: Problem, full: Problem, valid: Callable[[Problem], bool]) -> Problem:
    """``small`` with T doubled (up to ``full``'s) until ``valid`` accepts it: a config the full
    problem admits may not fit a reduced one (``segments`` needs whole chunks per piece), and
    checking there would fail a good config or check another one."""
    while small.T < full.T and not valid(small):
        small = small.replace(T=min(full.T, 2 * small.T))  # B, H and the number of sequences kept
    return small
