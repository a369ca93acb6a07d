"""Every config of the torch backends' chunked form against the float64 reference."""

from __future__ import annotations

import pytest

from eda_tune import chunk_eda
from eda_tune.checking import run_and_check
from eda_tune.problem import Problem

PROBLEM = Problem(B=1, T=45, H=2, K=16, V=24, dtype="float32", initial_state=True, final_state=True,
                  training=True, device="cpu")


@pytest.mark.parametrize("solver", ["triangular", "doubling"])
@pytest.mark.parametrize("chunk_size", [16, 32, 64, 128])
def test_every_torch_config(chunk_size: int, solver: str) -> None:
    config = {"chunk_size": chunk_size, "solver": solver}
    problem = PROBLEM if chunk_size < 128 else PROBLEM.replace(T=130)  # keep 128 admissible (T > 64)

    def fn(**inputs):
        return chunk_eda(**inputs, backend="torch", config=config)

    res = run_and_check(fn, problem, seed=chunk_size, grads=True)
    assert res.ok, f"{config}: {res.reason}"
    assert set(res.errors) >= {"o", "final_state", "dq", "dk", "dv", "de", "dg", "dbeta", "dgamma"}


def test_torch_compile_non_default_config() -> None:
    """The conformance suite runs torch_compile at its default (doubling, 64): here the other solver."""
    config = {"chunk_size": 16, "solver": "triangular"}
    problem = PROBLEM.replace(training=False)

    def fn(**inputs):
        return chunk_eda(**inputs, backend="torch_compile", config=config)

    res = run_and_check(fn, problem, seed=3, grads=False)
    assert res.ok, res.reason
