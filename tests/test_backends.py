"""The registry and the ``eda-tune backends`` command."""

from __future__ import annotations

import json

import pytest

from eda_tune.backends import Backend, all_backends, broken_backends, get_backend, register, unregister
from eda_tune.cli import main
from eda_tune.problem import Problem


def test_every_builtin_backend_imports() -> None:
    """A backend whose module fails to import would silently leave the conformance suite."""
    assert broken_backends() == {}
    assert {"torch", "torch_compile", "triton", "tilelang"} <= {b.name for b in all_backends()}


def test_backends_command_lists_every_backend_with_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["torch"]["available"] is True and rows["torch"]["backward"] is True
    assert rows["tilelang"]["backward"] is True  # TileLang kernels; packing and its autograd in PyTorch
    for r in rows.values():
        assert r["available"] or r["reason"], r


def test_supports_gives_a_reason() -> None:
    tl = get_backend("tilelang")
    ok, why = tl.supports(Problem(B=1, T=8, H=1, K=300, V=16, dtype="float32", training=True, device="cpu"))
    assert not ok and "up to 256" in why


def test_register_a_new_backend_joins_the_registry() -> None:
    class Echo(Backend):
        name = "echo_test"

        def is_available(self) -> tuple[bool, str]:
            return False, "test backend"

        def _build(self, problem, config):  # pragma: no cover - never built
            raise AssertionError

    register(Echo())
    try:
        assert get_backend("echo_test").is_available() == (False, "test backend")
        with pytest.raises(ValueError, match="already registered"):
            register(Echo())
    finally:
        unregister("echo_test")
    with pytest.raises(ValueError, match=r"backend must be one of .* but got 'echo_test'"):
        get_backend("echo_test")
