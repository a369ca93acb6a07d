"""One conformance suite that every registered, available backend runs (CPU; GPU-marked at the
standard shapes). A backend joins by registering: nothing here names one, except the
reference-only checks of the suite itself."""

from __future__ import annotations

import pytest
import torch

from eda_tune import chunk_eda, naive_recurrent_eda
from eda_tune.backends import all_backends
from eda_tune.checking import (
    FWD_TOL,
    GRAD_TOL,
    check_outputs,
    make_inputs,
    reference_outputs,
    rel_error,
    run_and_check,
)
from eda_tune.problem import Problem
from eda_tune.reference import naive_recurrent_gated_delta_rule
from eda_tune.shapes import builtin_shapes


def _backends(device: str) -> list:
    out = []
    for b in all_backends():
        ok, why = b.is_available()
        probe = Problem(B=1, T=8, H=1, K=16, V=16, dtype="float32", device=device)
        sup, why2 = b.supports(probe)
        marks = [] if ok and sup else [pytest.mark.skip(reason=f"{b.name}: {why or why2}")]
        out.append(pytest.param(b.name, marks=marks, id=b.name))
    return out


CPU_BACKENDS = _backends("cpu")


def _runner(backend: str, config: dict | None = None):
    def fn(**inputs):
        return chunk_eda(**inputs, backend=backend, config=config)
    return fn


def _assert_ok(res, what: str) -> None:
    assert res.errors, f"{what}: nothing was compared"
    assert res.ok, f"{what}: {res.reason}"


# Problems of the CPU suite: odd lengths, K != V, g absent, T = 1, state in and out, varlen.
FWD_CASES = {
    "base": Problem(B=2, T=37, H=2, K=16, V=32, dtype="float32", initial_state=True, final_state=True,
                    device="cpu"),
    "T1": Problem(B=2, T=1, H=2, K=16, V=32, dtype="float32", final_state=True, device="cpu"),
    "nogate": Problem(B=2, T=37, H=2, K=32, V=16, dtype="float32", gate=False, final_state=True, device="cpu"),
    "bf16": Problem(B=2, T=37, H=2, K=16, V=32, dtype="bfloat16", initial_state=True, final_state=True,
                    device="cpu"),
    "varlen": Problem(B=1, T=53, H=2, K=16, V=32, dtype="float32", num_seqs=4, initial_state=True,
                      final_state=True, device="cpu"),
    "l2norm": Problem(B=1, T=21, H=2, K=16, V=32, dtype="float32", l2norm=True, final_state=True, device="cpu"),
    "large-heads": Problem(B=1, T=19, H=1, K=256, V=128, dtype="float32", final_state=True, device="cpu"),
    "K64V256": Problem(B=1, T=19, H=1, K=64, V=256, dtype="float32", initial_state=True, device="cpu"),
}


@pytest.mark.parametrize("case", list(FWD_CASES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_forward_matches_reference(backend: str, case: str) -> None:
    problem = FWD_CASES[case]
    res = run_and_check(_runner(backend), problem, seed=hash(case) % 1000, grads=False)
    _assert_ok(res, f"{backend} {case}")
    if problem.final_state:
        assert "final_state" in res.errors


GRAD_CASES = {
    "base": Problem(B=2, T=37, H=2, K=16, V=32, dtype="float32", initial_state=True, final_state=True,
                    training=True, device="cpu"),
    "nogate-varlen": Problem(B=1, T=41, H=2, K=16, V=16, dtype="float32", gate=False, num_seqs=3,
                             initial_state=True, final_state=True, training=True, device="cpu"),
}


@pytest.mark.parametrize("case", list(GRAD_CASES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradients_match_reference(backend: str, case: str) -> None:
    from eda_tune.backends import get_backend

    if not get_backend(backend).supports_backward:
        pytest.skip(f"{backend} has no backward")
    problem = GRAD_CASES[case]
    res = run_and_check(_runner(backend), problem, seed=11, grads=True)
    _assert_ok(res, f"{backend} {case} backward")
    expected = {"do", "dq", "dk", "dv", "de", "dbeta", "dgamma", "dinitial_state"} | (
        {"dg"} if problem.gate else set())
    assert {n for n in res.errors if n.startswith("d")} == expected - {"do"}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gamma_zero_is_gated_deltanet(backend: str) -> None:
    """With gamma = 0 EDA must equal an independently written Gated DeltaNet recurrence."""
    problem = Problem(B=1, T=23, H=2, K=16, V=16, dtype="float32", initial_state=True, device="cpu")
    inp = make_inputs(problem, seed=5, gamma_zero=True)
    o, _ = chunk_eda(**inp, backend=backend)
    ref, _ = naive_recurrent_gated_delta_rule(inp["q"], inp["k"], inp["v"], inp["g"], inp["beta"],
                                              problem.K ** -0.5, inp["initial_state"])
    assert rel_error(o, ref) < FWD_TOL["float32"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_varlen_equals_separate_runs(backend: str) -> None:
    problem = Problem(B=1, T=50, H=2, K=16, V=16, dtype="float32", num_seqs=3, initial_state=True,
                      final_state=True, device="cpu")
    inp = make_inputs(problem, seed=3)
    o, final = chunk_eda(**inp, backend=backend)
    cu = inp["cu_seqlens"].tolist()
    for i in range(len(cu) - 1):
        sl = slice(cu[i], cu[i + 1])
        part = {n: (inp[n][:, sl] if n in ("q", "k", "v", "e", "g", "beta", "gamma") else inp[n])
                for n in ("q", "k", "v", "e", "g", "beta", "gamma")}
        o_i, f_i = chunk_eda(**part, initial_state=inp["initial_state"][i:i + 1], output_final_state=True,
                             backend=backend)
        assert rel_error(o[:, sl], o_i) < 1e-4, f"sequence {i}"
        assert rel_error(final[i:i + 1], f_i) < 1e-4, f"final state of sequence {i}"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_inputs(backend: str) -> None:
    problem = Problem(B=2, T=17, H=2, K=16, V=16, dtype="float32", device="cpu")
    inp = make_inputs(problem, seed=9)
    ref = reference_outputs(inp)
    # the same values behind strided views
    strided = dict(inp)
    for n in ("q", "k", "v", "e"):
        strided[n] = inp[n].transpose(1, 2).contiguous().transpose(1, 2)
        assert not strided[n].is_contiguous()
    strided["beta"] = inp["beta"].transpose(0, 1).contiguous().transpose(0, 1)
    o, _ = chunk_eda(**strided, backend=backend)
    assert rel_error(o, ref["o"]) < FWD_TOL["float32"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_output_dtype_and_state_dtype(backend: str) -> None:
    problem = Problem(B=1, T=9, H=1, K=16, V=16, dtype="bfloat16", final_state=True, device="cpu")
    inp = make_inputs(problem, seed=2)
    o, final = chunk_eda(**inp, backend=backend)
    assert o.dtype == torch.bfloat16 and o.shape == (1, 9, 1, 16)
    assert final is not None and final.dtype == torch.float32 and final.shape == (1, 1, 16, 16)
    o2, none = chunk_eda(**{**inp, "output_final_state": False}, backend=backend)
    assert none is None


# --- the suite's own checks: the reference and the tolerances mean something ----------------------

def test_reference_rejects_a_wrong_kernel() -> None:
    """A kernel with the erase dropped must fail the check: the suite can fail."""
    problem = Problem(B=1, T=16, H=2, K=16, V=16, dtype="float32", final_state=True, device="cpu")

    def no_erase(**inputs):
        return naive_recurrent_eda(**{**inputs, "gamma": torch.zeros_like(inputs["gamma"])})

    res = run_and_check(no_erase, problem, seed=1, grads=False)
    assert not res.ok and "o" in res.reason


def test_check_reports_nan() -> None:
    problem = Problem(B=1, T=8, H=1, K=16, V=16, dtype="float32", device="cpu")
    inp = make_inputs(problem, seed=1)
    ref = reference_outputs(inp)
    o = ref["o"].float().clone()
    o[0, 3, 0, 2] = float("nan")
    res = check_outputs(problem, inp, o, None, ref)
    assert not res.ok


def test_reference_matches_gated_deltanet_when_gamma_zero() -> None:
    problem = Problem(B=2, T=12, H=2, K=8, V=4, dtype="float64", initial_state=True, device="cpu")
    inp = make_inputs(problem, seed=4, gamma_zero=True)
    o, _ = naive_recurrent_eda(**inp)
    ref, _ = naive_recurrent_gated_delta_rule(inp["q"], inp["k"], inp["v"], inp["g"], inp["beta"],
                                              8 ** -0.5, inp["initial_state"])
    assert rel_error(o, ref) < 1e-13


def test_reference_equals_two_householder_steps_when_e_equals_k() -> None:
    """e == k: erase then write along one address (EDA_MATH.md special case), written by hand."""
    problem = Problem(B=1, T=6, H=1, K=4, V=3, dtype="float64", gate=False, device="cpu")
    inp = make_inputs(problem, seed=8)
    inp["e"] = inp["k"]
    o, _ = naive_recurrent_eda(**inp)
    S = torch.zeros(4, 3, dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)
    for t in range(6):
        kt = inp["k"][0, t, 0]
        S = (eye - inp["gamma"][0, t, 0] * torch.outer(kt, kt)) @ S
        S = (eye - inp["beta"][0, t, 0] * torch.outer(kt, kt)) @ S + inp["beta"][0, t, 0] * torch.outer(
            kt, inp["v"][0, t, 0])
        assert torch.allclose(o[0, t, 0], S.T @ (inp["q"][0, t, 0] * 0.5), atol=1e-12)


def test_tolerances_are_ordered() -> None:
    assert FWD_TOL["float64"] < FWD_TOL["float32"] < FWD_TOL["bfloat16"]
    assert all(GRAD_TOL[d] >= FWD_TOL[d] for d in FWD_TOL)


# --- GPU: the standard shapes (forward at full size; backward at reduced B and H) ------------------

GPU_BACKENDS = _backends("cuda")
STANDARD = {s.name: s.problem for s in builtin_shapes("standard")}
_GPU_REFS: dict = {}


def _gpu_reference(problem: Problem, seed: int, grads: bool) -> dict:
    """The float64 reference of one shape, computed once for every backend that runs it (the
    inputs are rebuilt from the seed, so each backend still gets fresh leaves for its gradients)."""
    key = (problem, seed, grads)
    if key not in _GPU_REFS:
        _GPU_REFS.clear()  # one shape at a time: the full-size references take GBs
        _GPU_REFS[key] = reference_outputs(make_inputs(problem, seed, requires_grad=grads),
                                           grads=grads, seed=seed)
    return _GPU_REFS[key]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)  # backend varies fastest: one reference a shape
@pytest.mark.parametrize("shape", list(STANDARD))
def test_gpu_standard_forward(backend: str, shape: str) -> None:
    problem = STANDARD[shape].replace(final_state=True)
    res = run_and_check(_runner(backend), problem, seed=0, grads=False,
                        reference=_gpu_reference(problem, seed=0, grads=False))
    _assert_ok(res, f"{backend} {shape}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)  # backend varies fastest: one reference a shape
@pytest.mark.parametrize("shape", list(STANDARD))
def test_gpu_standard_backward(backend: str, shape: str) -> None:
    from eda_tune.backends import get_backend

    if not get_backend(backend).supports_backward:
        pytest.skip(f"{backend} has no backward")
    full = STANDARD[shape]
    # the float64 reference keeps every step for autograd: shrink B, H and T, keep K, V, dtype
    small = full.replace(B=1, H=2, T=min(full.T, 2048), num_seqs=min(full.num_seqs, 4),
                         initial_state=True, final_state=True, training=True)
    res = run_and_check(_runner(backend), small, seed=1, grads=True,
                        reference=_gpu_reference(small, seed=1, grads=True))
    _assert_ok(res, f"{backend} {shape} backward (B=1, H=2, T={small.T})")
