"""Benchmarks of the tuner itself (issue 5, section 6). JSON goes under results/bench/.

    # 1. efficiency: the whole grid once at S1 (measured), then TPE (and random) with 3 seeds
    #    replayed against the grid's measurements: trials until within 3% of the grid's best
    python3 benchmarks/tuner_bench.py efficiency --backend tilelang --storage sqlite:///bench.db
    # 2. tuned vs default, from a results file written by `eda-tune tune`
    python3 benchmarks/tuner_bench.py tuned-vs-default --results results/h100-80gb-hbm3.yaml
    # 3. cold start: the first chunk_eda call at S1 in a fresh process using the shipped results
    python3 benchmarks/tuner_bench.py cold-start --results-dir results

Efficiency replays the samplers against the measured grid (``ReplayRunner``): every config the
sampler proposes gets the time the grid measured for it (or its failure), through the tuner's own
study loop (constraints, duplicates, budget counting), so only the grid costs device time. Trials
are counted as the tuner counts them (configs measured, not constraint rejections or repeats).
``--fix BT=64,num_stages=2`` pins tunables to shrink a grid too large to measure (triton's).

On a CPU every command runs on the tiny shape (``--device cpu``), as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from eda_tune import results as results_mod  # noqa: E402
from eda_tune.backends import get_backend  # noqa: E402
from eda_tune.hardware import DeviceInfo, detect, software_versions  # noqa: E402
from eda_tune.problem import Config, Problem  # noqa: E402
from eda_tune.search import tuner  # noqa: E402
from eda_tune.search.space import Parameter, SearchSpace  # noqa: E402
from eda_tune.shapes import builtin_shapes  # noqa: E402

OUT_DIR = ROOT / "results" / "bench"


def _shape(name: str, device: str) -> tuple[str, Problem]:
    shapes = {s.name: s.problem for s in builtin_shapes("standard" if device == "cuda" else "cpu", device=device)}
    if name not in shapes:
        raise SystemExit(f"--shape must be one of {sorted(shapes)} but got {name!r}")
    return name, shapes[name].replace(device=device)


def _narrow(space: SearchSpace, fix: str | None) -> SearchSpace:
    """``space`` with some tunables pinned (``BT=64,num_stages=2``)."""
    if not fix:
        return space
    params = dict(space.parameters)
    default = dict(space.default_values)
    for item in fix.split(","):
        name, _, raw = item.partition("=")
        if name not in params:
            raise SystemExit(f"--fix: unknown tunable {name!r}; known: {sorted(params)}")
        choices = params[name].values() or []
        match = [c for c in choices if str(c).lower() == raw.strip().lower()]
        if not match:
            raise SystemExit(f"--fix {name}: must be one of {choices} but got {raw!r}")
        params[name] = Parameter(name=name, choices=(match[0],))
        default[name] = match[0]
    return SearchSpace(backend=space.backend, parameters=params, constraints=space.constraints,
                       default_values=default, source=f"{space.source} (fixed {fix})")


class OfflineRunner:
    """The grid's runner under ``--slug``: it measures nothing (no device), so an incomplete grid stops."""

    def run(self, job: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
        raise SystemExit(f"--slug replays a complete grid only, but config {Config.from_dict(job['config']).key} "
                         f"is not measured in the storage: run without --slug on the GPU to finish the grid")

    def close(self) -> None:
        pass


class ReplayDone(Exception):
    """Raised by the replay runner once a sampled config reaches the target: the rest is not needed."""


class ReplayRunner:
    """A runner that answers from a table of measured configs (config key -> result).

    It keeps the order of the configs asked for, so that the trials to the target are counted twice:
    over every trial (``target``: within reach of the grid's best), and to the first config the
    *sampler* chose within reach of the best config it could choose (``sampled_target``: the default
    and the space's seeds are enqueued by the tuner before the sampler picks anything, and are left
    out of that best). With targets set it stops the replay (``ReplayDone``) at that sampled hit."""

    def __init__(self, table: Mapping[str, dict[str, Any]], target: float | None = None,
                 enqueued: frozenset[str] = frozenset(), sampled_target: float | None = None) -> None:
        self.table = table
        self.target = target
        self.sampled_target = sampled_target
        self.enqueued = enqueued
        self.calls = 0
        self.asked: list[str] = []

    def run(self, job: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
        self.calls += 1
        key = Config.from_dict(job["config"]).key
        self.asked.append(key)
        if key not in self.table:
            return {"ok": False, "kind": "runtime_error", "reason": f"config {key} is not in the grid table"}
        if key not in self.enqueued and self._hit(key, self.sampled_target):
            raise ReplayDone(key)
        return dict(self.table[key])

    def _hit(self, key: str, target: float | None) -> bool:
        r = self.table.get(key)
        return bool(r and r["ok"] and target is not None and r["time_ms"] <= target)

    def trials_to_target(self, sampled_only: bool = False) -> int | None:
        """1-based position of the first config within the target (the first the sampler chose
        within the sampled target)."""
        target = self.sampled_target if sampled_only else self.target
        for i, key in enumerate(self.asked, 1):
            if self._hit(key, target) and not (sampled_only and key in self.enqueued):
                return i
        return None

    def close(self) -> None:
        pass


def _table(study: optuna.Study, space: SearchSpace) -> dict[str, dict[str, Any]]:
    """Config key -> measured result of each finished trial of the grid study. A config stored
    before a tunable existed is completed with the space's default for it (what the kernels ran
    then: the grid's problem pins such tunables, as with the backward's tunables on a forward
    problem), so its key matches the configs the replayed samplers ask for."""
    out: dict[str, dict[str, Any]] = {}
    for t in study.trials:
        key = t.user_attrs.get("config_key")
        if key is None or t.state == TrialState.PRUNED or t.user_attrs.get("reused_from") is not None:
            continue
        stored = t.user_attrs.get("config")
        if isinstance(stored, dict) and set(space.parameters) - set(stored):
            key = Config.from_dict({**space.default_values, **stored}).key
        if t.state == TrialState.COMPLETE and t.value is not None:
            out[key] = {"ok": True, "time_ms": float(t.value)}
        elif t.state == TrialState.FAIL and t.user_attrs.get("kind") != "interrupted":
            out[key] = {"ok": False, "kind": t.user_attrs.get("kind", "runtime_error"),
                        "reason": t.user_attrs.get("reason", "failed in the grid")}
    return out


def efficiency(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    shape, problem = _shape(args.shape or ("S1" if device == "cuda" else "tiny"), device)
    backend = get_backend(args.backend)
    space = _narrow(backend.search_space, args.fix)
    extra = backend.constraint_vars(problem)
    valid = space.valid_grid(problem, extra)
    # --slug: the replay of a grid measured elsewhere (its storage brought back from the GPU machine);
    # the samplers' replay needs no device, the grid's card is named by the slug of its study
    info = DeviceInfo(kind=device, name=args.slug, slug=args.slug) if args.slug else detect(device, with_driver=True)
    print(f"efficiency: {backend.name} at {shape}: grid {space.grid_size()} configs, {len(valid)} valid")
    if args.max_grid and len(valid) > args.max_grid:
        raise SystemExit(f"the valid grid has {len(valid)} configs (> --max-grid {args.max_grid}); "
                         f"pin tunables with --fix NAME=VALUE,... or raise --max-grid")
    storage = tuner.make_storage(args.storage)
    opts = tuner.TuneOptions(trials=len(valid), sampler="grid", seed=0, trial_timeout=args.trial_timeout,
                             warmup_ms=args.warmup_ms, rep_ms=args.rep_ms, remeasure=False,
                             timeout=args.budget, precompile=args.precompile)
    runner = OfflineRunner() if args.slug else tuner.make_runner("process")
    name = f"bench-grid:{info.slug}:{backend.name}:{problem.key}:{args.fix or 'full'}"
    t0 = time.perf_counter()
    try:
        grid = tuner.run_study(storage, info.slug, backend, problem, shape, opts, runner, space=space, name=name,
                               progress=lambda d, n, b: print(f"  grid {d}/{n} best {b}", end="\r", flush=True))
    finally:
        runner.close()
    grid_s = time.perf_counter() - t0
    print()
    gstudy = optuna.load_study(study_name=name, storage=storage)
    table = _table(gstudy, space)
    if len(table) < len(valid):
        raise SystemExit(f"the grid is not complete: {len(table)} of {len(valid)} configs measured in "
                         f"{grid_s:.0f} s; run the same command again (same --storage) to continue it")
    ok_times = sorted(r["time_ms"] for r in table.values() if r["ok"])
    if not ok_times:
        raise SystemExit("no config of the grid ran: nothing to compare against")
    best = ok_times[0]
    target = best * (1 + args.within)
    within = sum(t <= target for t in ok_times)
    default_cfg, seed_cfgs = tuner.initial_configs(backend, space, problem, extra)
    enqueued = frozenset([default_cfg.key, *(c.key for c in seed_cfgs)])
    default_in_target = any(k in table and table[k]["ok"] and table[k]["time_ms"] <= target for k in enqueued)
    # the sampler's own task: the best config it can pick (the enqueued ones left out), within --within
    sampled_best = min((r["time_ms"] for k, r in table.items() if r["ok"] and k not in enqueued), default=None)
    sampled_target = None if sampled_best is None else sampled_best * (1 + args.within)
    print(f"  {within} configs within {args.within:.0%} of the grid's best {best:.4f} ms; best config the "
          f"sampler can pick (enqueued left out): {sampled_best} ms")
    rows = []
    for sampler in args.samplers.split(","):
        for seed in range(args.seeds):
            mem = optuna.storages.InMemoryStorage()
            sopts = tuner.TuneOptions(trials=len(valid), sampler=sampler, seed=seed, trial_timeout=None,
                                      remeasure=False)
            replay = ReplayRunner(table, target, enqueued, sampled_target)
            try:
                tuner.run_study(mem, info.slug, backend, problem, shape, sopts, replay, space=space,
                                name=f"replay-{sampler}-{seed}")
            except ReplayDone:
                pass
            st = optuna.load_study(study_name=f"replay-{sampler}-{seed}", storage=mem)
            marked = {t.user_attrs.get("config_key") or Config.from_dict(t.user_attrs.get("config", {})).key
                      for t in st.trials if t.user_attrs.get("is_default") or t.user_attrs.get("is_seed")}
            if not marked <= enqueued:  # the replay's idea of what the tuner enqueues is out of date
                raise SystemExit(f"the tuner enqueued {sorted(marked - enqueued)}, not foreseen by initial_configs")
            n, ns = replay.trials_to_target(), replay.trials_to_target(sampled_only=True)
            rows.append({"sampler": sampler, "seed": seed, "trials_to_target": n,
                         "fraction_of_grid": None if n is None else n / len(valid),
                         "sampled_trials_to_target": ns,
                         "sampled_fraction_of_grid": None if ns is None else ns / len(valid)})
            print(f"  {sampler:<6} seed {seed}: {n} trials to within {args.within:.0%} of the grid's best "
                  f"({'-' if n is None else f'{n / len(valid):.1%}'} of {len(valid)}); "
                  f"{ns} to the sampler's first pick within {args.within:.0%} of the best it can pick")
    goal = 0.2 * len(valid)
    verdicts = {}
    for field in ("trials_to_target", "sampled_trials_to_target"):
        tpe = [r[field] for r in rows if r["sampler"] == "tpe"]
        verdicts[field] = all(n is not None and n <= goal for n in tpe)
    met = verdicts["trials_to_target"]
    print(f"goal: TPE within {args.within:.0%} in <= 20% of the grid ({goal:.0f} trials): "
          f"{'met' if met else 'NOT met'}; by the sampler's own picks (enqueued default and seeds "
          f"not counted; target: the best config the sampler can pick): "
          f"{'met' if verdicts['sampled_trials_to_target'] else 'NOT met'}")
    software = ({"replay": software_versions(), "grid": "measured on the card of the slug; versions in its "
                 "session log"} if args.slug else software_versions())
    return {"benchmark": "efficiency", "device": info.to_dict(), "software": software,
            "offline_replay": bool(args.slug),
            "backend": backend.name, "shape": shape, "problem": problem.to_dict(), "fixed": args.fix,
            "grid_size": space.grid_size(), "valid_grid": len(valid), "grid_measured": len(table),
            "grid_failed": sum(not r["ok"] for r in table.values()), "grid_best_ms": best,
            "grid_default_ms": grid.default_time_ms, "grid_best_config": grid.best_config,
            "grid_wall_s": round(grid_s, 1), "within": args.within, "configs_within_target": within,
            "replay": rows, "goal_trials": goal, "goal_met": met,
            "goal_met_by_sampled": verdicts["sampled_trials_to_target"], "enqueued": sorted(enqueued),
            "sampled_best_ms": sampled_best,
            "enqueued_within_target": default_in_target,
            "grid_times_ms": {k: (r["time_ms"] if r["ok"] else None) for k, r in sorted(table.items())}}


def tuned_vs_default(args: argparse.Namespace) -> dict[str, Any]:
    res = results_mod.load(args.results)
    rows: list[dict[str, Any]] = []
    for key in sorted(res.entries):
        entry = res.entries[key]
        for name, r in sorted(entry.backends.items()):
            speedup = (r.default_time_ms / r.time_ms) if r.time_ms and r.default_time_ms else None
            row: dict[str, Any] = {"shape": entry.shape, "class": key, "backend": name, "default_ms": r.default_time_ms,
                         "tuned_ms": r.time_ms, "speedup": speedup, "trials": r.trials, "failed": r.failed,
                         "config": r.config, "remeasured": bool(r.extra.get("remeasured")),
                         "winner": name == entry.winner}
            rows.append(row)
            sp = "-" if speedup is None else f"{speedup:.2f}x"
            print(f"  {entry.shape or key:<12} {name:<14} default {r.default_time_ms} ms  tuned {r.time_ms} ms  {sp}")
    beats = [r for r in rows if r["speedup"] and r["speedup"] > 1.03]
    print(f"tuned beats default by > 3% in {len(beats)} of {sum(r['speedup'] is not None for r in rows)} "
          f"(backend, shape) pairs")
    return {"benchmark": "tuned_vs_default", "results_file": str(args.results), "device": res.device,
            "software": res.software, "rows": rows}


def accuracy_guard(args: argparse.Namespace) -> dict[str, Any]:
    """The tuner's accuracy guard (``tuner._pick``, ``--max-error-ratio``) replayed on the stored
    studies of a storage: which trials it leaves out, and whose pick it changes. The default each
    study is compared with is its latest default trial (the default as the study last ran it)."""
    storage = tuner.make_storage(args.storage)
    rows: list[dict[str, Any]] = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if t.value is not None and t.user_attrs.get("reused_from") is None]
        defaults = [t for t in complete if t.user_attrs.get("is_default")]
        if not defaults:
            continue
        plain = min(complete, key=lambda t: (t.value, t.number))
        best, worse = tuner._pick(complete, defaults[-1].user_attrs["config_key"], args.ratio)
        default_cfg = defaults[-1].user_attrs["config"]
        left_out = [{"trial": n, "time_ms": study.trials[n].value, "why": w,
                     "differs_from_default": {k: v for k, v in study.trials[n].user_attrs["config"].items()
                                              if default_cfg.get(k) != v}} for n, w in sorted(worse.items())]
        row = {"study": summary.study_name, "trials": len(complete), "left_out": left_out,
               "pick_before": {"trial": plain.number, "time_ms": plain.value},
               "pick_after": None if best is None else {"trial": best.number, "time_ms": best.value},
               "changed": best is not None and best.number != plain.number}
        rows.append(row)
        name = summary.study_name.split(":", 1)[-1]
        print(f"  {name[:60]:<60} trials {len(complete):3d}  left out {len(worse):2d}" + (
            f"  pick {plain.value:.3f} -> {best.value:.3f} ms" if row["changed"] and best else ""))
    changed = sum(r["changed"] for r in rows)
    print(f"the guard (x{args.ratio:g}) changes the pick of {changed} of {len(rows)} studies")
    slug = rows[0]["study"].split(":", 1)[0] if rows else "unknown"
    return {"benchmark": "accuracy_guard", "device": {"slug": slug}, "storage": args.storage,
            "max_error_ratio": args.ratio, "rows": rows, "changed": changed}


COLD_CHILD = r"""
import json, sys, time, os
t0 = time.perf_counter()
import torch
from eda_tune import chunk_eda, dispatch
from eda_tune.checking import make_inputs
from eda_tune.problem import Problem
t_import = time.perf_counter() - t0
p = Problem(**json.loads(sys.argv[1]))
x = make_inputs(p, seed=0)
sync = torch.cuda.synchronize if p.device == "cuda" else (lambda: None)
sync()
t1 = time.perf_counter()
choice = dispatch.plan(p)
o, _ = chunk_eda(**x)
sync()
first = time.perf_counter() - t1
t2 = time.perf_counter()
o, _ = chunk_eda(**x)
sync()
second = time.perf_counter() - t2
print("COLD " + json.dumps({"import_s": t_import, "first_call_s": first, "second_call_ms": second * 1e3,
                             "backend": choice.backend.name, "config": choice.config.to_dict(),
                             "source": choice.source}))
"""


def cold_start(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    shape, problem = _shape(args.shape or ("S1" if device == "cuda" else "tiny"), device)
    rows: list[dict[str, Any]] = []
    backends: list[str | None] = [None] + [b for b in (args.backends or "").split(",") if b]
    for backend in backends:
        for caches in ("empty", "warm"):
            env = dict(os.environ)
            env["EDA_TUNE_RESULTS_DIR"] = str(Path(args.results_dir).resolve())
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
            if backend:
                env["EDA_TUNE_BACKEND"] = backend
            else:
                env.pop("EDA_TUNE_BACKEND", None)
            tmp = tempfile.mkdtemp(prefix="eda-cold-")
            if caches == "empty":  # no compiler cache on disk: the true first call on a new machine
                for var in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "TILELANG_CACHE_DIR"):
                    env[var] = os.path.join(tmp, var.lower())
            out = subprocess.run([sys.executable, "-c", COLD_CHILD, json.dumps(problem.to_dict())], env=env,
                                 capture_output=True, text=True, timeout=args.timeout)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("COLD ")]
            if out.returncode != 0 or not line:
                row: dict[str, Any] = {"forced": backend, "caches": caches, "error": out.stderr[-2000:]}
            else:
                row = {"forced": backend, "caches": caches, **json.loads(line[-1][5:])}
            rows.append(row)
            print(f"  {backend or 'dispatcher':<14} caches {caches:<5} " + (
                f"first call {row['first_call_s']:.2f} s (backend {row['backend']}, {row['source']}), "
                f"second {row['second_call_ms']:.2f} ms" if "error" not in row else f"FAILED: {row['error'][-300:]}"))
    firsts = [r["first_call_s"] for r in rows if "first_call_s" in r and r["forced"] is None]
    goal_met = bool(firsts) and max(firsts) <= 10.0
    print(f"goal: first call <= 10 s: {'met' if goal_met else 'NOT met'}")
    return {"benchmark": "cold_start", "device": detect(device, with_driver=True).to_dict(),
            "software": software_versions(), "shape": shape, "problem": problem.to_dict(),
            "results_dir": str(args.results_dir), "rows": rows, "goal_s": 10.0, "goal_met": goal_met}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    e = sub.add_parser("efficiency", help="grid once, then samplers replayed: trials to within 3%%")
    e.add_argument("--backend", required=True)
    e.add_argument("--shape", default=None, help="standard shape name (default S1; tiny on a CPU)")
    e.add_argument("--fix", default=None, help="pin tunables: NAME=VALUE,...")
    e.add_argument("--storage", default=None, help="Optuna storage for the grid study (resumable)")
    e.add_argument("--samplers", default="tpe,random")
    e.add_argument("--seeds", type=int, default=3)
    e.add_argument("--within", type=float, default=0.03)
    e.add_argument("--max-grid", type=int, default=400)
    e.add_argument("--trial-timeout", type=float, default=300.0)
    e.add_argument("--budget", type=float, default=None, help="seconds for the grid in this run (resumable)")
    e.add_argument("--warmup-ms", type=float, default=25.0)
    e.add_argument("--rep-ms", type=float, default=100.0)
    e.add_argument("--slug", default=None,
                   help="replay a complete grid measured on the card of this slug (no device needed; "
                        "use with --device cuda on any machine)")
    e.add_argument("--precompile", type=int, default=0, metavar="WORKERS",
                   help="build every config of the grid first in this many processes (warm caches)")
    t = sub.add_parser("tuned-vs-default", help="tuned over default time per backend and shape, from results")
    t.add_argument("--results", required=True)
    g = sub.add_parser("accuracy-guard", help="the tuner's accuracy guard replayed on stored studies")
    g.add_argument("--storage", required=True, help="Optuna storage URL (e.g. sqlite:///results/studies/h200.db)")
    g.add_argument("--ratio", type=float, default=tuner.TuneOptions.max_error_ratio)
    c = sub.add_parser("cold-start", help="first chunk_eda call in a fresh process using shipped results")
    c.add_argument("--results-dir", default=str(ROOT / "results"))
    c.add_argument("--shape", default=None)
    c.add_argument("--backends", default=None, help="also force each of these backends (comma-separated)")
    c.add_argument("--timeout", type=float, default=600.0)
    for p in (e, c):
        p.add_argument("--device", default=default_device, choices=("cuda", "cpu"))
    for p in (e, t, c, g):
        p.add_argument("--json", default=None, help="output JSON (default results/bench/tuner_<what>_<slug>.json)")
    args = ap.parse_args(argv)
    if args.what == "efficiency":
        out = efficiency(args)
    elif args.what == "tuned-vs-default":
        out = tuned_vs_default(args)
    elif args.what == "accuracy-guard":
        out = accuracy_guard(args)
    else:
        out = cold_start(args)
    slug = out["device"].get("slug", "unknown")
    path = Path(args.json) if args.json else OUT_DIR / f"tuner_{args.what.replace('-', '_')}_{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=lambda o: None if isinstance(o, float) and math.isnan(o)
                               else str(o)))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
