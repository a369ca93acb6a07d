"""``eda-tune tune``: tune every (backend, shape class) here and write ``<device-slug>.yaml``.

With no arguments: on a GPU the standard shapes (S1-S5, V1) for every available backend; on a
CPU-only machine the tiny CPU shapes with the backends that run on CPU, a few trials each.
See docs/tuning.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any

NAME = "tune"
HELP = "tune backends' configs per shape class with Optuna and write results/<device-slug>.yaml"

#: defaults by device: (trials per study, seconds per study, seconds per trial, warmup ms, rep ms)
DEFAULTS = {"cuda": (40, 1800.0, 600.0, 25.0, 100.0), "cpu": (3, 60.0, 300.0, 5.0, 30.0)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backends", default=None,
                   help="comma-separated backends (default: every available backend that supports the shapes)")
    p.add_argument("--shapes", default=None, metavar="FILE",
                   help="YAML of shapes, or 'standard' (S1-S5, V1), 'cpu' (tiny) or 'grid' (one problem per "
                        "shape class: K = V in 64/128/256, bf16, every T and B*H bucket); default: standard "
                        "on a GPU, cpu on a CPU")
    p.add_argument("--mode", choices=("fwd", "fwd_bwd", "both"), default=None,
                   help="tune every shape for the forward (fwd), for training (fwd_bwd: forward+backward "
                        "timed, gradients checked; the classes a training call is dispatched to), or both; "
                        "default: as the shapes say (a shapes file's 'training: true'; the built-in sets are "
                        "forward)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda if present, else cpu")
    p.add_argument("--trials", type=int, default=None,
                   help="evaluated trials per study, counting those already in the storage "
                        "(default: 40 on a GPU, 3 on a CPU)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="time budget per study, checked between trials (default: 1800 GPU, 60 CPU)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="wall-clock budget of the whole command: studies stop between trials when it is "
                        "spent and the rest wait for the next run (the storage resumes them)")
    p.add_argument("--trial-timeout", type=float, default=None, metavar="SECONDS",
                   help="a trial running longer is killed and recorded as failed (default: 600 GPU, 300 CPU)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL (sqlite:///FILE, postgresql://..., journal:FILE); "
                        "default: journal file <cache>/studies.journal")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="results YAML to merge into; '{slug}' is replaced by the device slug "
                        "(default: $EDA_TUNE_RESULTS_DIR or <cache>/results, file <device-slug>.yaml)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed and seed of the check inputs")
    p.add_argument("--sampler", choices=("tpe", "random", "grid", "cmaes"), default="tpe")
    p.add_argument("--isolation", choices=("process", "none"), default="process",
                   help="run trials in a worker process (default; survives crashes and hangs) or in this one")
    p.add_argument("--warmup-ms", type=float, default=None, help="timing warm-up per trial")
    p.add_argument("--rep-ms", type=float, default=None, help="timing repetitions per trial, in ms")
    p.add_argument("--check-heads", type=int, default=2, help="heads checked against the reference per trial")
    p.add_argument("--precompile", type=int, default=0, metavar="WORKERS",
                   help="with --sampler grid: build and check every config of the grid first, in this many "
                        "worker processes at once, so the trials (timed one at a time) find the compiler "
                        "caches warm (default 0: off)")
    p.add_argument("--max-error-ratio", type=float, default=None, metavar="R",
                   help="a config whose check error (any output or gradient) is over R times the "
                        "backend default's on the same check inputs is not picked as the best, however "
                        "fast (default 1.1; 0: off). The tolerance check alone lets through configs that "
                        "are less accurate than the default (16-bit scratch, for instance)")
    p.add_argument("--refresh", action="store_true",
                   help="run no new trials: check and time each study's best config and the backend's "
                        "current default again, back to back, and rewrite the results (after a change "
                        "to the kernels or their defaults)")


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from eda_tune import dispatch
    from eda_tune import results as results_mod
    from eda_tune.backends import available_backends, get_backend
    from eda_tune.errors import EdaInputError
    from eda_tune.hardware import detect, software_versions
    from eda_tune.problem import ShapeClass
    from eda_tune.search import tuner
    from eda_tune.shapes import builtin_shapes, load_shapes

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EdaInputError("--device cuda: no CUDA device is visible to this process")
    trials, timeout, trial_timeout, warmup_ms, rep_ms = DEFAULTS[device]
    opts = tuner.TuneOptions(
        trials=args.trials if args.trials is not None else int(trials),
        timeout=args.timeout if args.timeout is not None else timeout,
        trial_timeout=args.trial_timeout if args.trial_timeout is not None else trial_timeout,
        sampler=args.sampler, seed=args.seed,
        warmup_ms=args.warmup_ms if args.warmup_ms is not None else warmup_ms,
        rep_ms=args.rep_ms if args.rep_ms is not None else rep_ms, check_heads=args.check_heads,
        refresh=args.refresh, precompile=args.precompile,
        **({} if args.max_error_ratio is None else {"max_error_ratio": args.max_error_ratio}))
    if args.shapes == "grid":
        shapes = class_grid(device)
    else:
        if args.shapes in ("standard", "cpu"):
            named = builtin_shapes(args.shapes, device=device)
        elif args.shapes:
            named = load_shapes(args.shapes, device=device)
        else:
            named = builtin_shapes("standard" if device == "cuda" else "cpu", device=device)
        shapes = [(s.name, s.problem.replace(device=device)) for s in named]
    shapes = with_mode(shapes, args.mode)
    if args.backends:
        backends = [get_backend(n.strip()) for n in args.backends.split(",") if n.strip()]
        for b in backends:
            ok, why = b.is_available()
            if not ok:
                raise EdaInputError(f"--backends: {b.name!r} is not available here: {why}")
    else:
        backends = available_backends()
    jobs, notes = tuner.plan_jobs(shapes, backends)
    info = detect(device, with_driver=True)
    out_path = (Path(args.results.replace("{slug}", info.slug)) if args.results
                else results_mod.user_results_dir() / f"{info.slug}.yaml")
    # a malformed file is reported before any trial runs
    previous_results = results_mod.load(out_path) if out_path.exists() else None
    storage = tuner.make_storage(args.storage)
    err = Console(stderr=True, soft_wrap=True)
    err.print(f"eda-tune tune: {info.name} ({info.slug}), {len(jobs)} studies, {opts.trials} trials each, "
              f"sampler {opts.sampler}; storage {args.storage or tuner.default_storage_path()}; "
              f"results {out_path}")
    for note in notes:
        err.print(f"  note: {note}")
    if not jobs:
        raise EdaInputError("nothing to tune: no backend given/available supports these shapes "
                            f"(backends: {[b.name for b in backends]})")
    software = software_versions()
    outcomes = []
    started = time.monotonic()
    if args.budget is not None and not args.budget > 0:
        raise EdaInputError(f"--budget must be > 0 seconds but got {args.budget}")
    # a `timeout` or a job scheduler sends SIGTERM: close the running trial as interrupted (it is
    # redone by the next run) instead of dying with it RUNNING in the storage
    try:
        previous: Any = signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    runner = tuner.make_runner(args.isolation)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("best {task.fields[best]}"), TimeElapsedColumn(), console=err,
                        transient=False, disable=not err.is_terminal and not _force_progress())
    try:
        with progress:
            for job in jobs:
                study_opts = opts
                if args.budget is not None:
                    left = args.budget - (time.monotonic() - started)
                    if left <= 0:
                        err.print(f"  --budget spent: {job.shape} {job.backend.name} and later studies wait "
                                  f"for the next run")
                        break
                    study_opts = dataclasses.replace(opts, timeout=min(opts.timeout or left, left))
                task = progress.add_task(f"{job.shape} {job.backend.name}", total=opts.trials, best="-")

                def update(done: int, total: int, best: float | None, task: TaskID = task,
                           label: str = f"{job.shape} {job.backend.name}") -> None:
                    shown = "-" if best is None else f"{best:.4g} ms"
                    progress.update(task, completed=done, total=total, best=shown)
                    if progress.disable:  # no terminal (a log, a batch job): one line per trial
                        err.print(f"  {label}: {done}/{total} trials, best {shown}")

                try:
                    entry = (previous_results.entries.get(ShapeClass.of(job.problem).key)
                             if previous_results is not None else None)
                    outcome = tuner.run_study(storage, info.slug, job.backend, job.problem, job.shape,
                                              study_opts, runner, progress=update,
                                              recorded=entry is not None and job.backend.name in entry.backends)
                except tuner.StudyMismatch as mismatch:  # this class was tuned on another problem
                    err.print(f"  skipped {job.shape} {job.backend.name}: {mismatch}")
                    progress.remove_task(task)
                    continue
                if outcome.unchanged and entry is not None:  # report what the file holds
                    kept = entry.backends[job.backend.name]
                    outcome.best_config, outcome.best_time_ms = kept.config, kept.time_ms
                    outcome.default_time_ms = kept.default_time_ms
                else:
                    tuner.record(out_path, info.to_dict(), software, outcome)
                outcomes.append(outcome)
                if not err.is_terminal:
                    best = "-" if outcome.best_time_ms is None else f"{outcome.best_time_ms:.4g} ms"
                    err.print(f"  {job.shape} {job.backend.name}: {outcome.trials} trials "
                              f"({outcome.ran} run now), {outcome.failed} failed, best {best}")
    finally:
        runner.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    dispatch.reset()
    _summary(outcomes, out_path)
    if outcomes and not opts.refresh and all(o.ran == 0 and o.trials >= opts.trials for o in outcomes):
        most = max(o.trials for o in outcomes)
        err.print(f"[yellow]no trial ran: every study already had --trials {opts.trials} evaluated trials "
                  f"(--trials counts those in the storage; the most here: {most}). Give a larger "
                  f"--trials to go on, or --refresh to time the stored best against the default.[/]", soft_wrap=True)
    return 0


def with_mode(shapes: list[tuple[str, Any]], mode: str | None) -> list[tuple[str, Any]]:
    """``--mode``: the shapes as given (None), all forward, all training (named ``<name>+bwd``), or
    each shape both ways (forward first)."""
    if mode is None:
        return shapes
    out: list[tuple[str, Any]] = []
    for name, problem in shapes:
        base = name[:-4] if name.endswith("+bwd") else name
        if mode in ("fwd", "both"):
            out.append((base, problem.replace(training=False)))
        if mode in ("fwd_bwd", "both"):
            out.append((f"{base}+bwd", problem.replace(training=True)))
    return out


def class_grid(device: str, dtypes: tuple[str, ...] = ("bfloat16",)) -> list[tuple[str, Any]]:
    """``--shapes grid``: one representative problem per shape class of the documented grid:
    K = V in 64, 128, 256; the dtypes; g present; every T bucket and every B*H bucket."""
    from eda_tune.problem import BH_BUCKETS, T_BUCKETS, ShapeClass

    out = []
    for dtype in dtypes:
        for kv in (64, 128, 256):
            for T in T_BUCKETS:
                for BH in BH_BUCKETS:
                    cls = ShapeClass(K=kv, V=kv, dtype=dtype, gate=True, T=T, BH=BH)
                    out.append((cls.key, cls.representative(device)))
    return out


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _force_progress() -> bool:
    import os

    return bool(os.environ.get("EDA_TUNE_PROGRESS"))


def _summary(outcomes: list, out_path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"eda-tune tune -> {out_path}")
    for col in ("shape", "class", "backend", "trials", "failed", "default ms", "tuned ms", "speedup", "config"):
        table.add_column(col)
    for o in outcomes:
        speed = (f"{o.default_time_ms / o.best_time_ms:.2f}x" if o.best_time_ms and o.default_time_ms else "-")
        table.add_row(o.shape, o.shape_class.key, o.backend, str(o.trials), str(o.failed),
                      "-" if o.default_time_ms is None else f"{o.default_time_ms:.4g}",
                      "-" if o.best_time_ms is None else f"{o.best_time_ms:.4g}", speed,
                      (", ".join(f"{k}={v}" for k, v in (o.best_config or {}).items()) or (o.reason or "-"))[:80])
    Console(file=sys.stdout, width=200).print(table)
