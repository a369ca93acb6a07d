"""Choosing (backend, config) for a call. Until tuned results exist: a fixed preference order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eda_tune.backends import Backend, EdaKernel, all_backends, get_backend
from eda_tune.errors import BackendUnavailable
from eda_tune.problem import Config, Problem


def candidates(problem: Problem) -> list[Backend]:
    """Available backends that support ``problem``, most preferred first."""
    return [b for b in all_backends() if b.is_available()[0] and b.supports(problem)[0]]


def select(problem: Problem, backend: str | None = None,
           config: Mapping[str, Any] | Config | None = None) -> tuple[Backend, EdaKernel]:
    """The backend and its built kernel for ``problem``; ``backend``/``config`` force a choice."""
    if backend is not None:
        chosen = get_backend(backend)
        return chosen, chosen.build(problem, config)
    found = candidates(problem)
    if not found:
        reasons = "; ".join(f"{b.name}: {b.is_available()[1] or b.supports(problem)[1]}" for b in all_backends())
        raise BackendUnavailable(f"no backend can run {problem.key}: {reasons}")
    chosen = found[0]
    return chosen, chosen.build(problem, config)
