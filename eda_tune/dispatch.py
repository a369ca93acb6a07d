"""Choosing (backend, config) for a call: tuned results for this device, else each backend's default.

The rule (documented in docs/tuning.md):

1. ``backend=`` (the call) beats ``$EDA_TUNE_BACKEND``, which beats the tuned winner. ``config=``
   beats the tuned config of whichever backend was chosen (a partial config is completed by the
   backend's default).
2. Tuned results: ``<slug>.yaml`` of this device (:func:`eda_tune.hardware.detect`) from every
   folder of :func:`eda_tune.results.results_dirs` (shipped ``results/``, then
   ``$EDA_TUNE_RESULTS_DIR``; the later files win class by class).
3. The call's :class:`~eda_tune.problem.ShapeClass` is matched to the *nearest* tuned class: same
   K, V, dtype and gate (else no match), least ``|log2 T - log2 T'| + |log2 BH - log2 BH'|``, +100
   when one is a training class and the other not; ties go to the larger T, then the larger B*H.
4. In that entry, backends are tried winner first, then by time: the first that is available,
   supports the problem (a call needing gradients needs a backend with backward) and whose tuned
   config satisfies its constraints for this problem wins. If none fits, the first backend that can
   run it with its default config. A training call matched to a forward-only class takes the
   backend so chosen with its *default* config: a forward tuning says nothing of the backward's
   tunables, and can hurt it (H200, S2: the forward's tuned ``segments: 4`` took forward+backward
   from 14.4 to 23.7 ms, results/bench/bench_h200_run34).
5. No results file for this device: the most preferred available backend with its default config,
   and one :class:`NoTunedResultsWarning` per process naming ``eda-tune tune``.

Nothing is ever tuned at call time. The choice is cached per (problem, backend, config, env), and the
kernel is built once per process (the backend's build cache), so a repeated call costs a dict lookup.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eda_tune import results as results_mod
from eda_tune.backends import Backend, EdaKernel, all_backends, get_backend
from eda_tune.errors import BackendUnavailable, EdaInputError
from eda_tune.problem import Config, Problem, ShapeClass

log = logging.getLogger(__name__)

ENV_BACKEND = "EDA_TUNE_BACKEND"
ENV_RESULTS = "EDA_TUNE_RESULTS_DIR"


class NoTunedResultsWarning(UserWarning):
    """No tuned results for this device: each backend runs its default config."""


@dataclass(frozen=True)
class Choice:
    """What the dispatcher picked for a problem, and why (``source``)."""

    backend: Backend
    config: Config
    source: str


_lock = threading.Lock()
_selected: dict[tuple[Any, ...], tuple[Backend, EdaKernel]] = {}
_results: dict[tuple[str, tuple[str, ...]], results_mod.Results | None] = {}
_warned: set[str] = set()


def reset() -> None:
    """Forget cached choices, loaded results and given warnings (tests; after writing new results)."""
    with _lock:
        _selected.clear()
        _results.clear()
        _warned.clear()


def candidates(problem: Problem) -> list[Backend]:
    """Available backends that support ``problem``, most preferred first."""
    return [b for b in all_backends() if b.is_available()[0] and b.supports(problem)[0]]


def device_results(problem: Problem) -> tuple[str, results_mod.Results | None]:
    """(slug, merged results for the device that runs ``problem``, or None)."""
    from eda_tune.hardware import detect

    slug = detect(problem.device).slug
    dirs = tuple(str(d) for d in results_mod.results_dirs())
    key = (slug, dirs)
    if key not in _results:
        _results[key] = results_mod.find(slug, [Path(d) for d in dirs])
    return slug, _results[key]


def _usable(b: Backend, problem: Problem) -> tuple[bool, str]:
    ok, why = b.is_available()
    if ok:
        ok, why = b.supports(problem)
    return ok, why


def plan(problem: Problem, backend: str | None = None,
         config: Mapping[str, Any] | Config | None = None) -> Choice:
    """The (backend, full config) a call of ``problem`` gets, and why; builds nothing."""
    forced = backend
    source_forced = "backend="
    if forced is None:
        env = os.environ.get(ENV_BACKEND) or None
        if env is not None:
            forced, source_forced = env, f"${ENV_BACKEND}"
    slug, res = device_results(problem)
    entry = None
    dist = math.inf
    if res is not None:
        entry, dist = res.nearest(ShapeClass.of(problem))
    where = f"{res.source if res else '?'} [{entry.shape_class.key if entry else '-'}]"
    # a forward-only tuning is not used for the config of a training call (rule 4)
    forward_only = entry is not None and problem.training and not entry.shape_class.training

    if forced is not None:
        try:
            chosen = get_backend(forced)
        except EdaInputError as err:
            raise EdaInputError(f"{source_forced}: {err}") from None
        ok, why = _usable(chosen, problem)
        if not ok:
            raise BackendUnavailable(f"{source_forced} {forced!r} cannot run {problem.key}: {why}")
        if config is not None:
            return Choice(chosen, chosen.resolve_config(problem, config), f"{source_forced} + config=")
        tuned = entry.backends.get(forced) if entry is not None else None
        if (tuned is not None and tuned.usable and not forward_only
                and chosen.check_config(problem, tuned.config or {})[0]):
            return Choice(chosen, Config.from_dict(tuned.config), f"{source_forced}, tuned config {where}")
        return Choice(chosen, chosen.default_config(problem), f"{source_forced}, default config")

    if res is None and slug not in _warned:
        _warned.add(slug)
        dirs = ", ".join(str(d) for d in results_mod.results_dirs())
        warnings.warn(f"eda-tune: no tuned results for this device ({slug}) in {dirs}; every backend runs "
                      f"its default config. Run `eda-tune tune` on this machine to tune it.",
                      NoTunedResultsWarning, stacklevel=4)
    if entry is not None:
        rejected = []
        for name, r in entry.ranked():
            try:
                b = get_backend(name)
            except EdaInputError:
                rejected.append(f"{name}: not installed")
                continue
            ok, why = _usable(b, problem)
            if ok and not forward_only:
                ok, why = b.check_config(problem, r.config or {})
            if ok:
                if config is not None:
                    return Choice(b, b.resolve_config(problem, config), f"tuned backend {where} + config=")
                if forward_only:
                    return Choice(b, b.default_config(problem),
                                  f"tuned backend {where} (forward-only class), default config for training")
                return Choice(b, Config.from_dict(r.config), f"tuned {where}, distance {dist:.2f}")
            rejected.append(f"{name}: {why}")
        log.info("no tuned config of %s fits %s (%s); using defaults", where, problem.key, "; ".join(rejected))
    found = candidates(problem)
    if not found:
        reasons = "; ".join(f"{b.name}: {_usable(b, problem)[1]}" for b in all_backends())
        raise BackendUnavailable(f"no backend can run {problem.key}: {reasons}")
    chosen = found[0]
    cfg = chosen.resolve_config(problem, config) if config is not None else chosen.default_config(problem)
    return Choice(chosen, cfg, "default (no tuned class matches)" if res is not None else "default (no results)")


def select(problem: Problem, backend: str | None = None,
           config: Mapping[str, Any] | Config | None = None) -> tuple[Backend, EdaKernel]:
    """The backend and its built kernel for ``problem``; ``backend``/``config`` force a choice."""
    env = os.environ
    cfg_key = None if config is None else (config if isinstance(config, Config) else Config.from_dict(config)).key
    key = (problem, backend, cfg_key, env.get(ENV_BACKEND), env.get(ENV_RESULTS))
    hit = _selected.get(key)
    if hit is not None:
        return hit
    choice = plan(problem, backend, config)
    kernel = choice.backend.build(problem, choice.config)
    log.debug("dispatch %s -> %s %s (%s)", problem.key, choice.backend.name, choice.config.key, choice.source)
    with _lock:
        _selected[key] = (choice.backend, kernel)
    return choice.backend, kernel


def nearest_distance(problem: Problem) -> float:
    """Distance from ``problem``'s class to the nearest tuned class of this device (inf: none)."""
    _, res = device_results(problem)
    if res is None:
        return math.inf
    return res.nearest(ShapeClass.of(problem))[1]
