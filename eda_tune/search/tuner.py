"""The tuner: one Optuna study per (device slug, backend, shape class), results merged into YAML.

Each trial: sample a config from the backend's search space, reject it (``PRUNED``, reason recorded,
nothing compiled) if it breaks a constraint, else hand it to the runner (an isolated worker process)
to build, check against the float64 reference and time. A failure of any kind is recorded on the
trial (``FAIL``, user attrs ``kind`` and ``reason``) and the study goes on.

Resuming: trials live in the Optuna storage (default: a journal file in the cache folder). Running
the same command again loads each study, counts its *evaluated* trials (``COMPLETE`` and ``FAIL``,
not constraint rejections and not trials cut short by an interrupt) and runs only the remainder of
``trials``. A new study gets the backend's default config enqueued as its first trial, so
``default_time_ms`` is measured in the same process as the tuned time. A config already evaluated in
the study is not measured again (its result is copied to the new trial). A finite space stops early
once every valid config has been evaluated.
"""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from eda_tune import results as results_mod
from eda_tune.backends import Backend
from eda_tune.errors import EdaInputError
from eda_tune.problem import Config, Problem, ShapeClass
from eda_tune.search.objective import backend_spec
from eda_tune.search.space import SearchSpace
from eda_tune.search.worker import InProcessRunner, IsolatedRunner, Runner

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "grid", "cmaes")
EVALUATED = (TrialState.COMPLETE, TrialState.FAIL)


def default_storage_path() -> Path:
    return results_mod.cache_dir() / "studies.journal"


def make_storage(url: str | None) -> Any:
    """An Optuna storage: None -> the journal file in the cache folder; ``journal:PATH`` or a path
    ending in ``.journal``/``.log`` -> a journal file; anything else -> an Optuna URL (sqlite:///...)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if url is None or url.startswith("journal:") or (("://" not in url) and url.endswith((".journal", ".log"))):
        path = default_storage_path() if url is None else Path(url.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if "://" not in url:
        raise EdaInputError(f"--storage must be an Optuna storage URL (sqlite:///FILE, postgresql://...), "
                            f"journal:FILE or a FILE.journal path but got {url!r}")
    return url


def _grid_space(space: SearchSpace) -> dict[str, list[Any]]:
    """The grid sampler's space, over the names ``SearchSpace.suggest`` asks for."""
    out: dict[str, list[Any]] = {}
    for name, p in space.parameters.items():
        values = p.values()
        if values is None:
            raise EdaInputError(f"--sampler grid needs a finite search space but {space.source} has the "
                                f"continuous parameter {name!r}")
        if p.choices is None and p.type == "int" and p.log:
            out[f"{name}__log2"] = [int(math.log2(v)) for v in values]
        else:
            out[name] = list(values)
    return out


def params_of(space: SearchSpace, config: Config) -> dict[str, Any]:
    """Optuna params that make ``space.suggest`` return ``config`` (for enqueueing a config)."""
    out: dict[str, Any] = {}
    for name, p in space.parameters.items():
        value = config[name]
        if p.choices is None and p.type == "int" and p.log:
            out[f"{name}__log2"] = int(math.log2(value))
        else:
            out[name] = value
    return out


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler calls ``study.stop()`` when the grid is done, which only works inside
    ``study.optimize``; the tuner drives ask/tell and stops by itself (every valid config seen)."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        return None

    def is_exhausted(self, study: optuna.Study) -> bool:
        return len(self._get_unvisited_grid_ids(study)) == 0


def make_sampler(name: str, seed: int, space: SearchSpace, n_trials: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=False,
                                              n_startup_trials=max(3, min(10, n_trials // 4)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return _AskTellGridSampler(_grid_space(space), seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise EdaInputError("--sampler cmaes needs the 'cmaes' package (pip install cmaes)") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise EdaInputError(f"--sampler must be one of {list(SAMPLERS)} but got {name!r}")


@dataclass
class TuneOptions:
    trials: int = 20
    timeout: float | None = None          # per study, seconds (checked between trials)
    trial_timeout: float | None = 600.0   # per trial, seconds (the worker is killed past it)
    sampler: str = "tpe"
    seed: int = 0
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    check_heads: int = 2
    check_T: int = 1024
    remeasure: bool = True                # re-time best and default back to back after the study
    precompile: int = 0                   # grid: build every queued config first in this many workers
    refresh: bool = False                 # no new trials: re-time the stored best and today's default
    max_error_ratio: float = 1.1          # best only among configs this close to the default's errors (0: off)

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise EdaInputError(f"--trials must be >= 1 but got {self.trials}")
        if self.timeout is not None and not self.timeout > 0:
            raise EdaInputError(f"--timeout must be > 0 seconds but got {self.timeout}")
        if self.trial_timeout is not None and not self.trial_timeout > 0:
            raise EdaInputError(f"--trial-timeout must be > 0 seconds but got {self.trial_timeout}")
        if self.sampler not in SAMPLERS:
            raise EdaInputError(f"--sampler must be one of {list(SAMPLERS)} but got {self.sampler!r}")
        if self.precompile < 0:
            raise EdaInputError(f"--precompile must be >= 0 workers but got {self.precompile}")
        if self.max_error_ratio != 0 and not self.max_error_ratio >= 1:
            raise EdaInputError(f"--max-error-ratio must be >= 1 (or 0: off) but got {self.max_error_ratio}")


@dataclass
class StudyOutcome:
    study_name: str
    backend: str
    shape_class: ShapeClass
    problem: Problem
    shape: str
    best_config: dict[str, Any] | None
    best_time_ms: float | None
    default_time_ms: float | None
    trials: int
    failed: int
    pruned: int
    ran: int
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    unchanged: bool = False  # nothing new since the results file recorded this study

    def backend_result(self) -> results_mod.BackendResult:
        extra: dict[str, Any] = {"pruned": self.pruned, "study": self.study_name,
                                 "tuned_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if self.reason:
            extra["reason"] = self.reason
        extra.update(self.extra)
        return results_mod.BackendResult(config=self.best_config, time_ms=self.best_time_ms,
                                         default_time_ms=self.default_time_ms, trials=self.trials,
                                         failed=self.failed, extra=extra)


class StudyMismatch(EdaInputError):
    """The study of a shape class in this storage measured another problem of that class."""


def study_name(slug: str, backend: str, shape_class: ShapeClass) -> str:
    return f"{slug}:{backend}:{shape_class.key}"


def _evaluated(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that measured a config (not a constraint rejection, a copy of an earlier measurement
    of the same config, or a trial cut short by an interrupt): what ``--trials`` counts."""
    return (t.state in EVALUATED and t.user_attrs.get("kind") not in ("interrupted", "superseded")
            and t.user_attrs.get("reused_from") is None)


ProgressFn = Callable[[int, int, float | None], None]


def initial_configs(backend: Backend, space: SearchSpace, problem: Problem,
                    extra: Mapping[str, Any]) -> tuple[Config, list[Config]]:
    """What a study runs before its sampler picks: the default (the backend's, or the space's
    fallback where the backend's breaks the space's constraints) and the space's seeds, each
    completed with the default, that fit ``problem`` (in their order, the default left out)."""
    default_cfg = backend.default_config(problem)
    if not space.check(problem, default_cfg, extra)[0]:
        default_cfg = space.default(problem, extra)
    seeds: list[Config] = []
    for seed in space.seeds:
        cfg = Config.from_dict({**default_cfg.to_dict(), **seed})
        if cfg.key != default_cfg.key and space.check(problem, cfg, extra)[0]:
            seeds.append(cfg)
    return default_cfg, seeds


def run_study(storage: Any, slug: str, backend: Backend, problem: Problem, shape: str, opts: TuneOptions,
              runner: Runner, progress: ProgressFn | None = None, space: SearchSpace | None = None,
              name: str | None = None, recorded: bool = False) -> StudyOutcome:
    """Run (or continue) the study of (slug, backend, class of ``problem``) up to ``opts.trials``.

    ``space`` narrows the backend's search space (a subset: every config must still satisfy the
    backend's own constraints); ``name`` overrides the study name (benchmarks). ``recorded``: the
    results file already holds this study's outcome, so a run that adds no trial re-measures
    nothing (its outcome has ``unchanged`` set and need not be recorded again)."""
    space = space or backend.search_space
    extra = backend.constraint_vars(problem)
    cls = ShapeClass.of(problem)
    name = name or study_name(slug, backend.name, cls)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(opts.sampler, opts.seed, space, opts.trials))
    stored = study.user_attrs.get("problem_key")
    if stored is None:
        study.set_user_attr("problem_key", problem.key)
        study.set_user_attr("problem", problem.to_dict())
        study.set_user_attr("shape", shape)
    elif stored != problem.key:
        raise StudyMismatch(f"study {name!r} in this storage tuned the problem {stored} but now {problem.key} "
                            f"was asked (same shape class); use that shape, or another --storage")
    # a trial left RUNNING by an interrupted earlier run is closed as failed and not counted
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "kind", "interrupted")
        study._storage.set_trial_user_attr(t._trial_id, "reason", "interrupted: left running by an earlier run")
        study.tell(t.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    default_cfg, seed_cfgs = initial_configs(backend, space, problem, extra)
    # a default or seed queued by an earlier run that never ran, whose config is no longer one of
    # today's (the space or the default changed since: its key is another): closed as failed, not
    # counted, so that queued copies of old configs do not pile up run after run and then take the
    # first trials of a longer run
    current = {default_cfg.key} | {c.key for c in seed_cfgs}
    for t in trials:
        if (t.state == TrialState.WAITING and (t.user_attrs.get("is_seed") or t.user_attrs.get("is_default"))
                and t.user_attrs.get("config_key") not in current):
            study._storage.set_trial_user_attr(t._trial_id, "kind", "superseded")
            study._storage.set_trial_user_attr(t._trial_id, "reason", "queued by an earlier run for a config "
                                               "that is no longer the default or a seed; never run")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    if any(t.state == TrialState.WAITING for t in trials):
        trials = study.get_trials(deepcopy=False)
    seen: dict[str, optuna.trial.FrozenTrial] = {}
    for t in trials:
        if _evaluated(t) and "config_key" in t.user_attrs:
            seen.setdefault(t.user_attrs["config_key"], t)
    waiting = {t.user_attrs.get("config_key") for t in trials if t.state == TrialState.WAITING}
    default_waiting = any(t.state == TrialState.WAITING and t.user_attrs.get("is_default") for t in trials)
    # the default goes first in a new study, and again where the backend's default for this problem
    # changed since the study began (a new tunable, a new rule): the stored default time, and a best
    # that beat the old default, say nothing about it
    if default_cfg.key not in seen and default_cfg.key not in waiting and not default_waiting:
        if trials:
            log.warning("study %s: the default config changed since this study began (now %s); it runs "
                        "first when the study gets more trials, and `tune --refresh` times it against the "
                        "stored best without new trials", name, default_cfg.key)
        study.enqueue_trial(params_of(space, default_cfg), user_attrs={"is_default": True,
                                                                       "config_key": default_cfg.key})
        waiting.add(default_cfg.key)
    # the space's seeds that fit this problem and were never run here, also in a study resumed from
    # before the seeds existed
    for cfg in seed_cfgs:
        if cfg.key in seen or cfg.key in waiting:
            continue
        study.enqueue_trial(params_of(space, cfg), user_attrs={"is_seed": True, "config_key": cfg.key})
        waiting.add(cfg.key)
    done = sum(_evaluated(t) for t in trials)
    deadline = None if opts.timeout is None else time.monotonic() + opts.timeout
    valid_keys: set[str] | None = None
    if space.is_finite() and space.grid_size() <= 100_000:
        valid = [Config.from_dict(c) for c in space.valid_grid(problem, extra)]
        valid_keys = {c.key for c in valid}
        if opts.sampler == "grid":
            # the grid walks the valid configs only, in an order fixed by the seed: walking the
            # product of the tunables spends a trial on each infeasible point (at S1, 10k of them
            # around 63 valid ones: on an H200, 1726 trials in 340 s of which 2 ran a config)
            default_queued = not trials or default_waiting
            random.Random(opts.seed).shuffle(valid)
            for cfg in valid:
                if cfg.key in seen or cfg.key in waiting or (default_queued and cfg.key == default_cfg.key):
                    continue
                study.enqueue_trial(params_of(space, cfg), user_attrs={"config_key": cfg.key})
                waiting.add(cfg.key)
            if opts.precompile > 0:
                queued = [c for c in valid if c.key not in seen]
                base_job = {"backend": backend.name, "backend_spec": backend_spec(backend),
                            "problem": problem.to_dict(), "seed": opts.seed, "check_heads": opts.check_heads,
                            "check_T": opts.check_T, "compile_only": True}
                stats = precompile([{**base_job, "config": c.to_dict()} for c in queued], opts.precompile,
                                   opts.trial_timeout, deadline=deadline)
                study.set_user_attr("last_precompile", stats)
                log.info("study %s: precompiled %d configs in %.0f s with %d workers (%d built and checked)",
                         name, stats["configs"], stats["wall_s"], stats["workers"], stats["ok"])
    # tunables the constraints leave one value for this problem are not sampled (e.g. the backward's
    # for a forward-only problem): the sampler's draws then break constraints far less often
    fixed = space.pinned(problem, extra)
    if fixed:
        log.info("study %s: %d tunables have one admissible value here and are not sampled: %s",
                 name, len(fixed), ", ".join(f"{k}={v}" for k, v in sorted(fixed.items())))
    pruned_now, ran = 0, 0
    # a grid walks through its infeasible points once; a sampler stuck on infeasible configs is stopped
    max_pruned = math.inf if opts.sampler == "grid" else max(200, 50 * opts.trials)
    best = _best(study, default_cfg.key, opts.max_error_ratio, space.default_values)
    if progress:
        progress(done, opts.trials, best)
    while done < opts.trials and not opts.refresh:
        if deadline is not None and time.monotonic() > deadline:
            log.info("study %s: --timeout reached after %d trials", name, done)
            break
        sampler = study.sampler
        if isinstance(sampler, _AskTellGridSampler) and sampler.is_exhausted(study):
            log.info("study %s: the grid is done", name)
            break
        if valid_keys is not None and valid_keys <= set(seen):
            log.info("study %s: every valid config of the space has been evaluated", name)
            break
        if pruned_now >= max_pruned:
            log.warning("study %s: %d sampled configs in a row broke constraints or were already "
                        "evaluated; stopping", name, pruned_now)
            break
        trial = study.ask()
        try:
            values = space.suggest(trial, fixed)
            config = Config.from_dict(values)
            trial.set_user_attr("config", config.to_dict())
            trial.set_user_attr("config_key", config.key)
            if config.key == default_cfg.key:
                trial.set_user_attr("is_default", True)
            ok, why = space.check(problem, values, extra)
            if not ok:
                trial.set_user_attr("kind", "constraint")
                trial.set_user_attr("reason", f"constraint: {why}")
                study.tell(trial, state=TrialState.PRUNED)
                pruned_now += 1
                continue
            prev = seen.get(config.key)
            if prev is not None:
                # the sampler learns from the copy; the budget counts measured configs only
                pruned_now += 1
                trial.set_user_attr("reused_from", prev.number)
                for k in ("kind", "reason", "time_ms", "p20_ms", "p80_ms"):
                    if k in prev.user_attrs:
                        trial.set_user_attr(k, prev.user_attrs[k])
                if prev.state == TrialState.COMPLETE:
                    study.tell(trial, prev.value)
                else:
                    study.tell(trial, state=TrialState.FAIL)
                continue
            pruned_now = 0
            job = {"backend": backend.name, "backend_spec": backend_spec(backend),
                   "problem": problem.to_dict(), "config": config.to_dict(), "seed": opts.seed,
                   "check_heads": opts.check_heads, "check_T": opts.check_T,
                   "warmup_ms": opts.warmup_ms, "rep_ms": opts.rep_ms}
            result = runner.run(job, opts.trial_timeout)
            for k in ("kind", "reason", "phase", "build_s", "check_s", "wall_s", "p20_ms", "p80_ms",
                      "method", "errors"):
                if result.get(k) is not None:
                    trial.set_user_attr(k, result[k])
            ran += 1
            if result.get("ok"):
                trial.set_user_attr("time_ms", result["time_ms"])
                frozen = study.tell(trial, float(result["time_ms"]))
            else:
                log.info("trial %d of %s failed: %s", trial.number, name, result.get("reason"))
                frozen = study.tell(trial, state=TrialState.FAIL)
            seen[config.key] = frozen
        except BaseException as err:
            if _state(study, trial.number) == TrialState.RUNNING:
                trial.set_user_attr("kind", "interrupted" if isinstance(err, KeyboardInterrupt) else "driver_error")
                trial.set_user_attr("reason", f"{type(err).__name__}: {err}")
                study.tell(trial, state=TrialState.FAIL)
            raise
        done += 1
        best = _best(study, default_cfg.key, opts.max_error_ratio, space.default_values)
        if progress:
            progress(done, opts.trials, best)
    outcome = _outcome(study, name, backend, cls, problem, shape, default_cfg, ran, opts)
    if recorded and ran == 0 and not opts.refresh:
        outcome.unchanged = True
    elif opts.remeasure or opts.refresh:
        _remeasure(outcome, backend, problem, default_cfg, opts, runner, force=opts.refresh)
    return outcome


def _remeasure(outcome: StudyOutcome, backend: Backend, problem: Problem, default_cfg: Config,
               opts: TuneOptions, runner: Runner, force: bool = False) -> None:
    """Time the best and the default config again, alternating, in one warm worker: trial times
    come from workers in different states (the first trial of a fresh process runs cold), so the
    ratio that the results report is measured back to back. The faster of the two is kept.
    ``force`` (``--refresh``): also when the default is the best, or was never timed in this study
    (a default that changed since), so that every figure the results give is from this run. A
    best config that fails its check here (the kernels changed since its trial) is not kept: the
    default is timed alone and shipped, and ``best_failed`` in the results says why."""
    if outcome.best_config is None or (outcome.default_time_ms is None and not force):
        return
    best_cfg = Config.from_dict(outcome.best_config)
    if best_cfg.key == default_cfg.key and not force:
        return
    base = {"backend": backend.name, "backend_spec": backend_spec(backend), "problem": problem.to_dict(),
            "seed": opts.seed, "check_heads": opts.check_heads, "check_T": opts.check_T,
            "warmup_ms": opts.warmup_ms, "rep_ms": opts.rep_ms}
    times: dict[str, list[float]] = {"best": [], "default": []}
    errors: dict[str, Any] = {}
    pairs = [("best", best_cfg), ("default", default_cfg)] if best_cfg.key != default_cfg.key else [
        ("default", default_cfg)]
    for _ in range(2):
        for which, cfg in list(pairs):
            r = runner.run({**base, "config": cfg.to_dict()}, opts.trial_timeout)
            if not r.get("ok"):
                log.warning("re-measuring %s config of %s failed: %s", which, outcome.study_name, r.get("reason"))
                if which == "default":
                    return
                # the study's best fails today (the kernels changed since its trial, or it never
                # was reliable): it is not shipped; the default is timed alone and kept
                outcome.extra["best_failed"] = {"config": best_cfg.to_dict(), "reason": str(r.get("reason"))}
                pairs = [("default", default_cfg)]
                times["best"] = []
                continue
            times[which].append(float(r["time_ms"]))
            errors[which] = r.get("errors")
    default_ms = min(times["default"])
    best_ms = min(times["best"]) if times["best"] else default_ms
    outcome.extra["trial_time_ms"] = round(float(outcome.best_time_ms or 0.0), 6)
    outcome.default_time_ms = default_ms
    # the two checked on the same inputs here, also where the study never ran today's default
    worse = less_accurate(errors.get("best"), errors.get("default"), opts.max_error_ratio) if times["best"] else None
    if worse:
        log.info("%s: the best config is less accurate than the default (%s); keeping the default",
                 outcome.study_name, worse)
        outcome.extra["less_accurate_best"] = worse
    if best_ms <= default_ms and not worse and times["best"]:
        outcome.best_time_ms = best_ms
    else:  # within noise the default is as fast, or the best is less accurate: keep the default
        outcome.best_config, outcome.best_time_ms = default_cfg.to_dict(), default_ms
    outcome.extra["remeasured"] = True
    outcome.extra.pop("p20_ms", None)  # those were the trial's spread, not the re-measurement's
    outcome.extra.pop("p80_ms", None)


#: errors under this count as exact for ``less_accurate`` (float32 problems differ by rounding noise)
ERROR_FLOOR = 1e-5


def less_accurate(errors: dict[str, float | None] | None, base: dict[str, float | None] | None,
                  ratio: float) -> str | None:
    """Why a config's check errors (relative, per output and gradient) are worse than ``base`` (the
    default config's, same check inputs) beyond ``ratio``; None when they are not, or when either
    is unknown (a study that predates recording them) or ``ratio`` is 0 (the guard is off)."""
    if not ratio or not errors or not base:
        return None
    worse = [f"{name} {err:.3g} > {ratio:g} x {base[name]:.3g}" for name, err in errors.items()
             if err is not None and base.get(name) is not None and err > ratio * float(base[name] or 0.0) + ERROR_FLOOR]
    return "; ".join(worse) or None


def _state(study: optuna.Study, number: int) -> TrialState:
    return study.get_trials(deepcopy=False)[number].state


def completed_key(t: optuna.trial.FrozenTrial, default_values: Mapping[str, Any]) -> str:
    """The key of the config a trial ran, completed with the space's defaults for tunables added
    since (the kernel's behaviour before the switch): trials of one config under two spaces' keys
    compare as one."""
    return Config.from_dict({**default_values, **t.user_attrs.get("config", {})}).key


def _latest(complete: Sequence[optuna.trial.FrozenTrial], default_values: Mapping[str, Any]
            ) -> list[optuna.trial.FrozenTrial]:
    """One trial per config (``completed_key``), the latest: a config timed again after the space
    gained a tunable (a new key, so it ran) was timed on today's kernels, and its older time, from
    before a change, is not picked (2026-12-03, run 87: the H200 S1 tilelang study kept a 2.19 ms
    trial of 11-28 against today's 2.39 for the same config and reported a 1.09x speedup)."""
    latest: dict[str, optuna.trial.FrozenTrial] = {}
    for t in sorted(complete, key=lambda t: t.number):
        latest[completed_key(t, default_values)] = t
    return sorted(latest.values(), key=lambda t: t.number)


def _pick(complete: Sequence[optuna.trial.FrozenTrial], default_key: str, ratio: float,
          default_values: Mapping[str, Any] | None = None
          ) -> tuple[optuna.trial.FrozenTrial | None, dict[int, str]]:
    """The fastest of the completed trials that are not less accurate than the default's trial
    (``less_accurate``, same check inputs), and why each one left out was. With the space's
    ``default_values``, a config timed more than once counts by its latest trial (``_latest``)."""
    if default_values is None:
        defaults = [t for t in complete if t.user_attrs.get("config_key") == default_key]
    else:
        complete = _latest(complete, default_values)
        defaults = [t for t in complete if completed_key(t, default_values) == default_key]
    base = next((t.user_attrs["errors"] for t in reversed(defaults) if t.user_attrs.get("errors")), None)
    worse = {t.number: w for t in complete if (w := less_accurate(t.user_attrs.get("errors"), base, ratio))}
    kept = [t for t in complete if t.number not in worse and t.value is not None]
    return (min(kept, key=lambda t: (t.value, t.number)) if kept else None), worse


def _best(study: optuna.Study, default_key: str, ratio: float,
          default_values: Mapping[str, Any] | None = None) -> float | None:
    best, _ = _pick(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), default_key, ratio,
                    default_values)
    return None if best is None else best.value


def _outcome(study: optuna.Study, name: str, backend: Backend, cls: ShapeClass, problem: Problem, shape: str,
             default_cfg: Config, ran: int, opts: TuneOptions) -> StudyOutcome:
    trials = study.get_trials(deepcopy=False)
    evaluated = [t for t in trials if _evaluated(t)]
    complete = [t for t in evaluated if t.state == TrialState.COMPLETE and t.value is not None]
    failed = [t for t in evaluated if t.state == TrialState.FAIL]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    space_defaults = backend.search_space.default_values
    # the default's latest timing (an older one may predate a change of the kernels)
    defaults = [t for t in _latest(complete, space_defaults) if completed_key(t, space_defaults) == default_cfg.key]
    # a config checked less accurate than the default (same check inputs) is not picked
    best, worse = _pick(complete, default_cfg.key, opts.max_error_ratio, space_defaults)
    reason = None
    if best is None:
        reasons = [t.user_attrs.get("reason") for t in failed if t.user_attrs.get("reason")]
        reason = reasons[0] if reasons else "no trial finished"
    extra: dict[str, Any] = {"sampler": opts.sampler}
    if worse:
        extra["less_accurate_trials"] = len(worse)
        shown = "; ".join(f"trial {n}: {w}" for n, w in sorted(worse.items())[:3])
        log.info("%s: %d configs not picked, less accurate than the default (x%g): %s",
                 name, len(worse), opts.max_error_ratio, shown)
    if best is not None:
        for k in ("p20_ms", "p80_ms"):
            if k in best.user_attrs:
                extra[k] = round(float(best.user_attrs[k]), 6)
    best_config = None
    if best is not None:
        best_config = dict(best.user_attrs["config"])
        # a study begun before the space gained a tunable stored configs without it; the trial ran
        # what the tunable's default (the kernel's behaviour before the switch) does
        added = {n: v for n, v in backend.search_space.default_values.items() if n not in best_config}
        if added:
            best_config.update(added)
            log.info("%s: the best trial's config predates tunables %s; completed with their defaults",
                     name, sorted(added))
    return StudyOutcome(study_name=name, backend=backend.name, shape_class=cls, problem=problem, shape=shape,
                        best_config=best_config,
                        best_time_ms=None if best is None else float(best.value or 0.0),
                        default_time_ms=float(defaults[-1].value or 0.0) if defaults else None,
                        trials=len(evaluated), failed=len(failed), pruned=len(pruned), ran=ran,
                        reason=reason, extra=extra)


@dataclass
class Job:
    """One study to run: a named problem and a backend."""

    shape: str
    problem: Problem
    backend: Backend


def plan_jobs(shapes: Sequence[tuple[str, Problem]], backends: Sequence[Backend]
              ) -> tuple[list[Job], list[str]]:
    """Studies to run (one per backend and shape class; the first shape of a class stands for it) and
    notes on what is skipped and why."""
    jobs: list[Job] = []
    notes: list[str] = []
    first_of: dict[str, str] = {}
    for shape, problem in shapes:
        key = ShapeClass.of(problem).key
        if key in first_of:
            notes.append(f"{shape}: same shape class {key} as {first_of[key]}; tuned once, as {first_of[key]}")
            continue
        first_of[key] = shape
        for b in backends:
            ok, why = b.is_available()
            if ok:
                ok, why = b.supports(problem)
            if not ok:
                notes.append(f"{shape} x {b.name}: skipped: {why}")
                continue
            jobs.append(Job(shape, problem, b))
    return jobs, notes


def precompile(jobs: list[dict[str, Any]], workers: int, trial_timeout: float | None,
               deadline: float | None = None) -> dict[str, Any]:
    """Build (and check, and run once) every job's config in ``workers`` isolated processes at once,
    so that the trials that then time them one at a time find the compiler caches warm (Triton's
    and Inductor's on-disk caches). Results are only counted: a config that fails here is run, and
    its failure recorded, by its trial. ``deadline``: a ``time.monotonic()`` after which queued jobs
    are skipped."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()
    runners: list[IsolatedRunner] = []
    t0 = time.monotonic()

    def run_one(job: dict[str, Any]) -> str:
        if deadline is not None and time.monotonic() > deadline:
            return "skipped"
        if not hasattr(local, "runner"):  # one worker process per thread, reused for its jobs
            local.runner = IsolatedRunner()
            runners.append(local.runner)
        return "ok" if local.runner.run(job, trial_timeout).get("ok") else "failed"

    n = max(1, min(workers, len(jobs)))
    try:
        with ThreadPoolExecutor(n, thread_name_prefix="eda-tune-precompile") as pool:
            outcomes = list(pool.map(run_one, jobs))
    finally:
        for r in runners:
            r.close()
    counts = {k: outcomes.count(k) for k in ("ok", "failed", "skipped")}
    return {"configs": len(jobs), "workers": n, "wall_s": round(time.monotonic() - t0, 2), **counts}


def make_runner(isolation: str) -> Runner:
    if isolation == "process":
        return IsolatedRunner()
    if isolation == "none":
        return InProcessRunner()
    raise EdaInputError(f"--isolation must be 'process' or 'none' but got {isolation!r}")


def record(results_path: Path, device: dict[str, Any], software: dict[str, Any], outcome: StudyOutcome
           ) -> results_mod.Results:
    """Merge one study's outcome into the results file (atomic write) and return the merged file."""
    res = results_mod.new_results(device, software)
    res.set_backend(outcome.shape_class, outcome.backend, outcome.backend_result(), problem=outcome.problem,
                    shape=outcome.shape)
    return results_mod.write(results_path, res)
