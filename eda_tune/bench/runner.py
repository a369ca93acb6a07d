"""Running targets (a backend with its default or tuned config, or an fla baseline) over shapes:
``run_check`` (correctness against the float64 recurrence) and ``run_bench`` (check, then time).

Both return plain dicts (the JSON reports); a failure of one target at one shape is recorded in
its row, never raised. Every registered backend is covered through the Backend interface alone.
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from eda_tune.bench.baselines import BASELINES, FlaBaseline
from eda_tune.checking import grow_until_valid, make_inputs, reference_outputs, run_and_check
from eda_tune.problem import Problem
from eda_tune.shapes import NamedShape

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
SCHEMA = 1

#: Limits of the shapes the float64 reference checks gradients at (autograd keeps every step).
CHECK_MAX_T = 1024
CHECK_MAX_H = 2


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_device(device: str) -> None:
    """Without a GPU, Triton kernels run in its interpreter: set before any kernel is defined."""
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------

@dataclass
class Target:
    """One thing to check or time. ``variant``: ``default``, ``tuned`` or ``baseline``."""

    label: str
    name: str
    variant: str
    supports_backward: bool
    gamma_zero: bool = False
    description: str = ""
    tuned: Mapping[str, Any] | None = None  # tuned configs by problem key (filled lazily)
    tuned_source: str = ""
    baseline: FlaBaseline | None = None
    # a config that overrides the lookup (the bench checks gradients at a smaller problem with the
    # config the full-size problem gets, which may belong to another shape class)
    pinned: Mapping[str, Any] | None = None

    @property
    def is_baseline(self) -> bool:
        return self.baseline is not None

    def supports(self, problem: Problem) -> tuple[bool, str]:
        if self.baseline is not None:
            ok, why = self.baseline.is_available()
            return self.baseline.supports(problem) if ok else (ok, why)
        from eda_tune.backends import get_backend

        b = get_backend(self.name)
        ok, why = b.is_available()
        if not ok:
            return ok, why
        return b.supports(problem)

    def config_for(self, problem: Problem) -> dict[str, Any] | None:
        """The config this target runs at ``problem`` (None for baselines)."""
        if self.baseline is not None:
            return None
        from eda_tune.backends import get_backend

        b = get_backend(self.name)
        wanted: Mapping[str, Any] | None = None
        if self.pinned is not None:
            return b.resolve_config(problem, self.pinned).to_dict()
        if self.variant == "tuned":
            wanted = tuned_config(self.name, problem)
            if wanted is None:
                raise LookupError(f"no tuned config of {self.name} for {problem.key}")
        return b.resolve_config(problem, wanted).to_dict()

    def build(self, problem: Problem) -> tuple[Callable[..., Any], dict[str, Any] | None]:
        """A callable taking make_inputs' keyword arguments, and the config it runs."""
        if self.baseline is not None:
            return self.baseline.build(problem), None
        from eda_tune.backends import get_backend

        config = self.config_for(problem)
        kernel = get_backend(self.name).build(problem, config)
        scale = problem.K ** -0.5

        def call(**inputs: Any) -> Any:
            kw = {"scale": scale, "initial_state": None, "output_final_state": False, "cu_seqlens": None,
                  "use_qk_l2norm_in_kernel": False}
            kw.update(inputs)
            return kernel(**kw)

        return call, config


def tuned_config(backend: str, problem: Problem) -> dict[str, Any] | None:
    """The tuned config of ``backend`` for ``problem``'s shape class (else the nearest class) in
    this device's results file, or None (no results module or file, no usable entry; a training
    problem whose nearest class is forward-only, as the dispatcher gives it the default). Never raises."""
    try:
        from eda_tune import hardware
        from eda_tune import results as R
        from eda_tune.problem import ShapeClass

        found = R.find(hardware.detect(problem.device).slug)
        if found is None:
            return None
        cls = ShapeClass.of(problem)
        entry = found.entries.get(cls.key)
        if entry is None or backend not in entry.backends or not entry.backends[backend].usable:
            entry, _ = found.nearest(cls)
        if entry is None or backend not in entry.backends or not entry.backends[backend].usable:
            return None
        if problem.training and not entry.shape_class.training:
            return None
        return dict(entry.backends[backend].config or {})
    except Exception as err:  # a broken or absent results file must not stop a benchmark
        log.debug("no tuned config of %s for %s: %s", backend, problem.key, err)
        return None


def backend_targets(names: Iterable[str] | None, with_tuned: bool = False,
                    with_baselines: bool = True) -> tuple[list[Target], list[dict[str, str]]]:
    """Targets for the named backends/baselines (None: every registered backend + fla when
    importable), and the ones left out with why."""
    from eda_tune.backends import all_backends, broken_backends, get_backend

    skipped: list[dict[str, str]] = []
    targets: list[Target] = []
    explicit = names is not None
    if names is None:
        chosen = [b.name for b in all_backends()]
        for n, err in broken_backends().items():
            skipped.append({"target": n, "reason": f"failed to import: {err}"})
        if with_baselines:
            chosen += list(BASELINES)
    else:
        chosen = list(names)
    for n in chosen:
        if n in BASELINES:
            bl = BASELINES[n]
            ok, why = bl.is_available()
            if not ok and not explicit:
                skipped.append({"target": n, "reason": why})
                continue
            targets.append(Target(label=n, name=n, variant="baseline", supports_backward=bl.supports_backward,
                                  gamma_zero=bl.gamma_zero, description=bl.description, baseline=bl))
            continue
        b = get_backend(n)  # raises EdaInputError listing what exists
        ok, why = b.is_available()
        if not ok and not explicit:
            skipped.append({"target": n, "reason": why})
            continue
        targets.append(Target(label=n, name=n, variant="default", supports_backward=b.supports_backward,
                              description=f"{n}, default config"))
        if with_tuned:
            targets.append(Target(label=f"{n}[tuned]", name=n, variant="tuned",
                                  supports_backward=b.supports_backward,
                                  description=f"{n}, tuned config from results/<gpu>.yaml"))
    return targets, skipped


# ---------------------------------------------------------------------------------------------
# Inputs and references, shared by every target at a shape
# ---------------------------------------------------------------------------------------------

def target_inputs(problem: Problem, seed: int, grads: bool, gamma_zero: bool) -> dict[str, Any]:
    inputs = make_inputs(problem, seed, gamma_zero=gamma_zero, requires_grad=grads)
    if gamma_zero and grads:  # the op takes no e and gamma: their gradients are not compared
        for name in ("e", "gamma"):
            inputs[name] = inputs[name].detach()
    return inputs


class References:
    """float64 references per (problem, seed, grads, gamma_zero), computed once; and the check
    rows of targets already checked at a problem (so that fwd+bwd does not redo the fwd check)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, bool, bool], dict[str, torch.Tensor | None]] = {}
        self.checked: dict[tuple[Any, ...], dict[str, Any]] = {}

    def get(self, problem: Problem, seed: int, grads: bool, gamma_zero: bool) -> dict[str, torch.Tensor | None]:
        key = (problem.key, seed, grads, gamma_zero)
        if key not in self._cache:
            inputs = target_inputs(problem, seed, grads, gamma_zero)
            self._cache[key] = reference_outputs(inputs, grads=grads, seed=seed)
        return self._cache[key]

    def clear(self) -> None:
        self._cache.clear()
        self.checked.clear()


def check_problem(problem: Problem, max_t: int = CHECK_MAX_T, max_h: int = CHECK_MAX_H) -> Problem:
    """A problem the float64 reference can check gradients at: same K, V, dtype and options, at
    most ``max_h`` heads, one sequence of at most ``max_t`` tokens (varlen: up to 4 sequences in
    2 * ``max_t`` tokens)."""
    if problem.varlen:
        t = min(problem.T, 2 * max_t)
        return problem.replace(T=t, H=min(problem.H, max_h), num_seqs=min(problem.num_seqs, 4, t))
    return problem.replace(B=1, T=min(problem.T, max_t), H=min(problem.H, max_h))


#: Autograd through the float64 recurrence keeps about this many [N, H, K, V] float64 states a step.
_STATES_PER_STEP = 8
GRAD_CHECK_BUDGET_BYTES = 8 * 2**30


def grad_check_problem(problem: Problem) -> Problem:
    """``problem`` itself when autograd through the float64 reference fits the budget
    (:data:`GRAD_CHECK_BUDGET_BYTES`), else the :func:`check_problem` reduction of it."""
    need = problem.T * problem.B * problem.H * problem.K * problem.V * 8 * _STATES_PER_STEP
    return problem if need <= GRAD_CHECK_BUDGET_BYTES else check_problem(problem)


def _err_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return text if len(text) < 600 else text[:600] + " ..."


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def check_target(target: Target, problem: Problem, refs: References, seed: int = 0) -> dict[str, Any]:
    """Check one target at one problem (``problem.training`` says whether gradients are compared).
    Returns a row: status pass/fail/error/skip, errors, tolerances, reason, config, seconds."""
    pinned = tuple(sorted((k, str(v)) for k, v in target.pinned.items())) if target.pinned else None
    key = (target.label, problem.key, seed, pinned)
    if key not in refs.checked:
        refs.checked[key] = _check_target(target, problem, refs, seed)
    return dict(refs.checked[key])


def _skip_reason(target: Target, problem: Problem) -> str:
    """Why ``target`` cannot run ``problem`` ("" if it can)."""
    ok, why = target.supports(problem)
    if ok and problem.training and not target.supports_backward:
        return "forward only"
    return "" if ok else (why or "not supported")


def _check_target(target: Target, problem: Problem, refs: References, seed: int) -> dict[str, Any]:
    row: dict[str, Any] = {"status": "skip", "errors": {}, "tolerances": {}, "reason": "", "config": None}
    row["reason"] = _skip_reason(target, problem)
    if row["reason"]:
        return row
    t0 = time.perf_counter()
    grads = problem.training
    try:
        fn, config = target.build(problem)
        row["config"] = config
        reference = refs.get(problem, seed, grads, target.gamma_zero)
        inputs = target_inputs(problem, seed, grads, target.gamma_zero)
        res = run_and_check(fn, problem, seed=seed, grads=grads, reference=reference, inputs=inputs)
        _sync(problem.device)
        row["errors"] = {k: _finite(v) for k, v in res.errors.items()}
        row["tolerances"] = dict(res.tolerances)
        row["status"] = "pass" if res.ok else "fail"
        row["reason"] = res.reason
        if not res.errors:
            row["status"], row["reason"] = "fail", "nothing was compared"
    except LookupError as err:  # a tuned target without a tuned config here
        row["status"], row["reason"] = "skip", str(err).strip("'\"")
    except Exception as err:
        row["status"], row["reason"] = "error", _err_text(err)
        row["traceback"] = traceback.format_exc(limit=8)
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _finite(x: float) -> float | None:
    """JSON has no inf/nan: those become None (and the row fails)."""
    return float(x) if math.isfinite(x) else None


def environment(device: str) -> dict[str, Any]:
    """Card, versions and time of this run."""
    env: dict[str, Any] = {"device": device, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        from eda_tune import hardware

        info = hardware.detect(device)
        env.update({"card": info.name, "slug": info.slug, "compute_capability": info.compute_capability})
        env["versions"] = hardware.software_versions()
    except Exception as err:
        env["card"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        env["hardware_error"] = _err_text(err)
        env["versions"] = {"torch": torch.__version__}
        for pkg in ("triton", "tilelang", "optuna"):
            env["versions"][pkg] = _pkg_version(pkg)
    from eda_tune.bench.baselines import fla_version

    env["versions"]["fla"] = fla_version()
    import platform

    env["python"] = platform.python_version()
    env["git"] = _git_commit()
    return env


def _pkg_version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def _git_commit(cwd: str | None = None) -> str | None:
    """The checkout's commit, with "+dirty" when tracked files differ from it (the code that ran is
    then not that commit's: e.g. a working tree copied onto a GPU machine over an older clone)."""
    import subprocess

    here = cwd or os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False, cwd=here)
        commit = out.stdout.strip()
        if not commit:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=30, check=False, cwd=here)
        return commit + ("+dirty" if status.returncode == 0 and status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------

def run_check(targets: list[Target], shapes: list[NamedShape], seed: int = 0, backward: bool = True,
              progress: Progress | None = None, skipped: list[dict[str, str]] | None = None,
              notes: list[str] | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Check every target at every shape, forward and (where supported) backward. ``on_row`` gets
    the report so far (``partial: true``) after every row, so that a run cut short keeps them."""
    device = shapes[0].problem.device if shapes else default_device()
    refs = References()
    env = environment(device)
    rows: list[dict[str, Any]] = []
    modes = ("fwd", "bwd") if backward else ("fwd",)
    for shape in shapes:
        for mode in modes:
            problem = shape.problem.replace(training=(mode == "bwd"))
            note = ""
            if mode == "bwd" and grad_check_problem(problem) != problem:
                problem = grad_check_problem(problem)
                note = (f"gradients checked at B={problem.B}, T={problem.T}, H={problem.H} (autograd through "
                        f"the float64 recurrence cannot run at the full shape)")
            for target in targets:
                if progress:
                    progress(f"check {target.label} {shape.name} {mode}")
                row = check_target(target, problem, refs, seed)
                if note and row["status"] != "skip":
                    row["reason"] = f"{row['reason']}; {note}" if row["reason"] else note
                rows.append({"target": target.label, "backend": target.name, "variant": target.variant,
                             "shape": shape.name, "mode": mode, "problem": problem.to_dict(), **row})
                if on_row:
                    on_row({**_check_report(targets, shapes, seed, skipped, notes, env, rows), "partial": True})
            refs.clear()
    return _check_report(targets, shapes, seed, skipped, notes, env, rows)


def _check_report(targets: list[Target], shapes: list[NamedShape], seed: int,
                  skipped: list[dict[str, str]] | None, notes: list[str] | None, env: dict[str, Any],
                  rows: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [r for r in rows if r["status"] in ("fail", "error")]
    return {"kind": "eda-tune-check", "schema": SCHEMA, "env": env, "seed": seed,
            "targets": [{"label": t.label, "backend": t.name, "variant": t.variant,
                         "description": t.description} for t in targets],
            "not_run": skipped or [], "notes": notes or [], "shapes": [
                {"name": s.name, **s.problem.to_dict()} for s in shapes],
            "rows": list(rows), "ok": not failed, "failures": len(failed)}


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------

@dataclass
class BenchOptions:
    fwd_only: bool = False
    seed: int = 0
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    measure_ceilings: bool = True
    check_max_t: int = CHECK_MAX_T
    extra_notes: list[str] = field(default_factory=list)


def _grad_leaves(inputs: Mapping[str, Any]) -> list[torch.Tensor]:
    return [x for x in inputs.values() if isinstance(x, torch.Tensor) and x.requires_grad]


def _timed(fn: Callable[[], Any], device: str, opts: BenchOptions) -> dict[str, Any]:
    from eda_tune.bench.timing import peak_memory_mb, time_fn

    t = time_fn(fn, device=device, warmup_ms=opts.warmup_ms, rep_ms=opts.rep_ms)
    mem = peak_memory_mb(fn, device)
    return {"time_ms": t.median_ms, "p20_ms": t.p20_ms, "p80_ms": t.p80_ms, "method": t.method,
            "peak_mem_mb": mem}


def bench_target(target: Target, problem: Problem, refs: References, opts: BenchOptions,
                 floor: Mapping[str, float]) -> dict[str, Any]:
    """Check ``target`` at ``problem`` (forward at full size; with backward, gradients at
    :func:`check_problem` size), then time it. Returns a row; never raises."""
    row: dict[str, Any] = {"status": "skip", "reason": "", "config": None, "check": None}
    row["reason"] = _skip_reason(target, problem)
    if row["reason"]:
        return row
    device = problem.device
    t0 = time.perf_counter()
    try:
        # correctness first: the full-size forward, and the gradients at a checkable size
        fwd_problem = problem.replace(training=False)
        check = check_target(target, fwd_problem, refs, opts.seed)
        checks = {"fwd": _brief(check, fwd_problem)}
        if problem.training and check["status"] == "pass":
            small = check_problem(problem, max_t=opts.check_max_t)
            # the gradients of the config that is timed, not of the one the small problem would get
            timed = None if target.is_baseline else target.config_for(problem)
            if timed is not None:  # longer, where the timed config does not fit the small problem
                from eda_tune.backends import get_backend

                small = grow_until_valid(small, problem, lambda p: get_backend(target.name).check_config(p, timed)[0])
            check = check_target(replace(target, pinned=timed), small, refs, opts.seed)
            checks["bwd"] = _brief(check, small)
        row["check"] = checks
        row["config"] = check.get("config")
        if check["status"] != "pass":
            row["status"] = "wrong" if check["status"] == "fail" else check["status"]
            row["reason"] = check["reason"]
            return row
        fn, config = target.build(problem)
        row["config"] = config
        inputs = target_inputs(problem, opts.seed, problem.training, target.gamma_zero)
        if problem.training:
            leaves = _grad_leaves(inputs)
            o, _ = fn(**inputs)
            do = torch.randn_like(o)

            def step() -> Any:
                out, _ = fn(**inputs)
                return torch.autograd.grad(out, leaves, do, allow_unused=True)
        else:
            def step() -> Any:
                with torch.no_grad():
                    return fn(**inputs)
        step()  # compile / autotune outside the timing
        _sync(device)
        row.update(_timed(step, device, opts))
        row["status"] = "ok"
        fl = floor.get("floor_ms")
        if fl:
            row["time_over_floor"] = row["time_ms"] / fl
    except LookupError as err:
        row["status"], row["reason"] = "skip", str(err).strip("'\"")
    except Exception as err:
        row["status"], row["reason"] = "error", _err_text(err)
        row["traceback"] = traceback.format_exc(limit=8)
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _brief(check: Mapping[str, Any], problem: Problem) -> dict[str, Any]:
    return {"status": check["status"], "errors": check.get("errors", {}), "reason": check.get("reason", ""),
            "problem": problem.key}


def run_bench(targets: list[Target], shapes: list[NamedShape], opts: BenchOptions | None = None,
              progress: Progress | None = None, skipped: list[dict[str, str]] | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Check then time every target at every shape, forward and forward+backward.

    ``on_row`` gets the report so far (``partial: true``) after every row, so that a run cut
    short (a time limit, a crash) keeps what it measured."""
    from eda_tune.bench.floors import floors, measure_ceilings, nominal_ceilings

    opts = opts or BenchOptions()
    device = shapes[0].problem.device if shapes else default_device()
    if progress:
        progress("measuring copy bandwidth and matmul rate")
    try:
        ceilings = measure_ceilings(device) if opts.measure_ceilings else nominal_ceilings(device)
    except Exception as err:
        log.warning("measuring the ceilings failed (%s); using nominal figures", err)
        ceilings = nominal_ceilings(device)
    rows: list[dict[str, Any]] = []
    modes = ("fwd",) if opts.fwd_only else ("fwd", "fwd_bwd")
    shape_rows = []
    for shape in shapes:
        refs = References()
        for mode in modes:
            problem = shape.problem.replace(training=(mode == "fwd_bwd"))
            floor = floors(problem, ceilings, backward=(mode == "fwd_bwd"))
            shape_rows.append({"shape": shape.name, "mode": mode, **floor})
            for target in targets:
                if progress:
                    progress(f"bench {target.label} {shape.name} {mode}")
                row = _same_as_default(target, problem, shape.name, mode, rows) or \
                    bench_target(target, problem, refs, opts, floor)
                rows.append({"target": target.label, "backend": target.name, "variant": target.variant,
                             "shape": shape.name, "mode": mode, "problem": problem.to_dict(),
                             "floor_ms": floor["floor_ms"], **row})
                if on_row:
                    on_row({**_bench_report(targets, shapes, opts, skipped, device, ceilings, shape_rows,
                                            [dict(r) for r in rows]), "partial": True})
        refs.clear()
    return _bench_report(targets, shapes, opts, skipped, device, ceilings, shape_rows, rows)


def _same_as_default(target: Target, problem: Problem, shape: str, mode: str,
                     rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A skip row for a tuned target whose config is the one its backend's default row (same shape
    and mode, this run) already timed: timing one config twice only spends device time, and two
    times for one config read as a difference between configs. None where the tuned target runs."""
    if target.variant != "tuned":
        return None
    twin = next((r for r in rows if r["backend"] == target.name and r["variant"] == "default"
                 and r["shape"] == shape and r["mode"] == mode and r.get("status") == "ok"), None)
    if twin is None or twin.get("config") is None:
        return None
    try:
        config = target.config_for(problem)
    except Exception:  # no tuned config, or a broken one: bench_target reports it
        return None
    if config != twin["config"]:
        return None
    return {"status": "skip", "reason": f"the tuned config is the default's, timed in the {twin['target']} row",
            "config": config, "check": None, "seconds": 0.0}


def _bench_report(targets: list[Target], shapes: list[NamedShape], opts: BenchOptions,
                  skipped: list[dict[str, str]] | None, device: str, ceilings: Any,
                  shape_rows: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    add_speedups(rows)
    bad = [r for r in rows if r["status"] in ("wrong", "error")]
    return {"kind": "eda-tune-bench", "schema": SCHEMA, "env": environment(device),
            "ceilings": ceilings.to_dict(), "options": {"fwd_only": opts.fwd_only, "seed": opts.seed,
                                                        "warmup_ms": opts.warmup_ms, "rep_ms": opts.rep_ms,
                                                        "check_max_t": opts.check_max_t},
            "targets": [{"label": t.label, "backend": t.name, "variant": t.variant,
                         "description": t.description} for t in targets],
            "not_run": skipped or [], "notes": list(opts.extra_notes),
            "shapes": [{"name": s.name, **s.problem.to_dict()} for s in shapes],
            "floors": shape_rows, "rows": rows, "ok": not bad, "failures": len(bad)}


REFERENCE_BASELINE = "fla_gdp"


def add_speedups(rows: list[dict[str, Any]], baseline: str = REFERENCE_BASELINE) -> None:
    """``speedup_vs_fla_gdp`` = fla gdp's time / this time, per shape and mode, where both ran."""
    base = {(r["shape"], r["mode"]): r["time_ms"] for r in rows
            if r["target"] == baseline and r.get("status") == "ok"}
    for r in rows:
        b = base.get((r["shape"], r["mode"]))
        if b and r.get("status") == "ok" and r.get("time_ms"):
            r[f"speedup_vs_{baseline}"] = b / r["time_ms"]


def _join_reports(reports: list[Mapping[str, Any]], what: str) -> dict[str, Any]:
    """What bench and check merges share: one card, rows keyed by (shape, mode, target) with a later
    run's row winning, and the shapes, targets, not-run targets and notes of every run joined."""
    from eda_tune.errors import EdaInputError

    if not reports:
        raise EdaInputError(f"merge needs at least one {what} report")
    kinds = {r.get("kind") for r in reports}
    if kinds != {f"eda-tune-{what}"}:
        raise EdaInputError(f"merge joins {what} reports (kind eda-tune-{what}) but got kinds "
                            f"{sorted(map(str, kinds))}")
    cards = {r.get("env", {}).get("card") for r in reports}
    if len(cards) > 1:
        raise EdaInputError(f"{what} reports to merge must come from one kind of card but got "
                            f"{sorted(map(str, cards))}")
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    shapes: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    not_run: dict[str, Any] = {}
    notes: list[str] = []
    for rep in reports:
        for r in rep["rows"]:
            rows[(r["shape"], r["mode"], r["target"])] = dict(r)
        shapes.update({s["name"]: s for s in rep.get("shapes", [])})
        targets.update({t["label"]: t for t in rep.get("targets", [])})
        not_run.update({n["target"]: n for n in rep.get("not_run", [])})
        notes += [n for n in rep.get("notes", []) if n not in notes and not n.startswith("merged from")]
    ran = {r["target"] for r in rows.values()}
    runs = ", ".join(f"{r.get('env', {}).get('time_utc')} (git {r.get('env', {}).get('git')})" for r in reports)
    notes.append(f"merged from {len(reports)} runs on this card: {runs}")
    return {"rows": rows, "shapes": list(shapes.values()), "targets": list(targets.values()),
            "not_run": [n for k, n in not_run.items() if k not in ran], "notes": notes,
            "merged_from": [r.get("env", {}).get("time_utc") for r in reports]}


def merge_bench(reports: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One bench report from several runs on the same card (e.g. shapes split over several calls):
    rows, shapes, targets and floors joined (a later run's row wins at the same shape, mode and
    target), speedups recomputed. Each row keeps the floor of the run that timed it."""
    joined = _join_reports(reports, "bench")
    floors_: dict[tuple[str, str], Any] = {}
    for rep in reports:
        floors_.update({(f["shape"], f["mode"]): f for f in rep.get("floors", [])})
    merged_rows = list(joined.pop("rows").values())
    for r in merged_rows:
        r.pop(f"speedup_vs_{REFERENCE_BASELINE}", None)
    add_speedups(merged_rows)
    bad = [r for r in merged_rows if r["status"] in ("wrong", "error")]
    if "ceilings shown: the first run's" not in joined["notes"]:
        joined["notes"].insert(-1, "ceilings shown: the first run's")
    out: dict[str, Any] = {k: v for k, v in reports[0].items() if k != "partial"}
    out.update({**joined, "rows": merged_rows, "floors": list(floors_.values()), "ok": not bad,
                "failures": len(bad)})
    return out


def merge_check(reports: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One check report from several runs on the same card (e.g. shapes or backends split over
    several calls): a later run's row wins at the same shape, mode and target. The result is
    marked partial while some target has no row at some shape."""
    joined = _join_reports(reports, "check")
    rows = joined.pop("rows")
    order = {s["name"]: i for i, s in enumerate(joined["shapes"])}
    torder = {t["label"]: i for i, t in enumerate(joined["targets"])}
    merged_rows = sorted(rows.values(), key=lambda r: (order.get(r["shape"], 1 << 30), r["mode"] != "fwd",
                                                        torder.get(r["target"], 1 << 30)))
    have = {(r["target"], r["shape"], r["mode"]) for r in merged_rows}
    modes = {r["mode"] for r in merged_rows}
    missing = [(t["label"], s["name"], m) for t in joined["targets"] for s in joined["shapes"] for m in modes
               if (t["label"], s["name"], m) not in have]
    failed = [r for r in merged_rows if r["status"] in ("fail", "error")]
    out: dict[str, Any] = {k: v for k, v in reports[0].items() if k != "partial"}
    out.update({**joined, "rows": merged_rows, "ok": not failed, "failures": len(failed)})
    if missing:
        out["partial"] = True
    return out
