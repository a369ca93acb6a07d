"""Tuned results: ``results/<device-slug>.yaml``, its schema, reading, validation, merging, writing.

Schema (version 1; plain YAML values only)::

    schema_version: 1
    device: {name: NVIDIA H100 80GB HBM3, slug: h100-80gb-hbm3, compute_capability: '9.0', driver: '570.1'}
    software: {torch: 2.11.0, cuda: '12.8', triton: 3.6.0, tilelang: null, optuna: 4.5.0, eda_tune: 0.1.0}
    entries:
      K128_V128_bfloat16_g_T4096_BH128:            # the shape class key (eda_tune.problem.ShapeClass)
        shape_class: {K: 128, V: 128, dtype: bfloat16, gate: true, T: 4096, BH: 128, training: false}
        shape: S1                                  # the name of the tuned shape (optional)
        problem: {B: 8, T: 4096, H: 16, K: 128, ...}   # the problem the trials ran
        backends:
          triton: {config: {BT: 64, ...}, time_ms: 1.8, default_time_ms: 2.4, trials: 40, failed: 3}
          torch_compile: {config: null, time_ms: null, default_time_ms: null, trials: 5, failed: 5,
                          reason: "compile error: ..."}
        winner: triton                             # the fastest backend with a time (null if none)

Writing merges with the file's content (a class the new results lack is kept; within a class, a
backend the new results lack is kept, and the winner is recomputed) and is atomic: the YAML is
written to a temporary file in the same folder, flushed, then renamed over the target.

Where results are looked up (:func:`results_dirs`): the ``results/`` folder shipped in the package,
then the user's folder, ``$EDA_TUNE_RESULTS_DIR`` (default ``<cache>/results``, see
:func:`cache_dir`). Both files of one slug are merged class by class; the user's entries win.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from eda_tune.errors import EdaInputError, ResultsError
from eda_tune.problem import Config, Problem, ShapeClass

SCHEMA_VERSION = 1

TOP_KEYS = ("schema_version", "device", "software", "entries")
ENTRY_KEYS = {"shape_class", "shape", "problem", "backends", "winner"}
BACKEND_KEYS = {"config", "time_ms", "default_time_ms", "trials", "failed", "reason", "pruned", "study",
                "sampler", "p20_ms", "p80_ms", "tuned_at", "trial_time_ms",
                "remeasured", "less_accurate_trials", "less_accurate_best", "best_failed"}
DEVICE_KEYS = {"name", "slug", "compute_capability", "driver"}


# ---------------------------------------------------------------------------------------------
# Where things live
# ---------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """``$EDA_TUNE_CACHE``, else ``$XDG_CACHE_HOME/eda-tune``, else ``~/.cache/eda-tune``."""
    env = os.environ.get("EDA_TUNE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "eda-tune"


def shipped_results_dir() -> Path:
    """The ``results/`` folder of the installed package (committed, read-only results)."""
    try:
        return Path(str(resources.files("results")))
    except (ModuleNotFoundError, TypeError):  # not installed as a package: the source tree's folder
        return Path(__file__).resolve().parents[1] / "results"


def user_results_dir() -> Path:
    """``$EDA_TUNE_RESULTS_DIR``, else ``<cache>/results``: where ``eda-tune tune`` writes by default."""
    env = os.environ.get("EDA_TUNE_RESULTS_DIR")
    return Path(env).expanduser() if env else cache_dir() / "results"


def results_dirs() -> list[Path]:
    """Folders searched for ``<slug>.yaml``, in increasing precedence (later files win)."""
    return [shipped_results_dir(), user_results_dir()]


# ---------------------------------------------------------------------------------------------
# The schema as typed objects
# ---------------------------------------------------------------------------------------------

@dataclass
class BackendResult:
    """One backend's outcome on one shape class."""

    config: dict[str, Any] | None
    time_ms: float | None
    default_time_ms: float | None = None
    trials: int = 0
    failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"config": None if self.config is None else dict(self.config),
                               "time_ms": _num(self.time_ms), "default_time_ms": _num(self.default_time_ms),
                               "trials": int(self.trials), "failed": int(self.failed)}
        out.update(self.extra)
        return out

    @property
    def usable(self) -> bool:
        return self.config is not None and self.time_ms is not None and math.isfinite(self.time_ms)


@dataclass
class Entry:
    """The results of one shape class."""

    shape_class: ShapeClass
    problem: Problem | None
    backends: dict[str, BackendResult]
    shape: str | None = None
    winner: str | None = None

    def __post_init__(self) -> None:
        if self.winner is None:
            self.winner = self.best()

    def best(self) -> str | None:
        """The backend with the least ``time_ms`` (None when no backend has a time)."""
        timed = [(r.time_ms, name) for name, r in self.backends.items() if r.usable]
        return min(timed)[1] if timed else None

    def ranked(self) -> list[tuple[str, BackendResult]]:
        """Backends with a time, fastest first (the winner first when it has one)."""
        timed = sorted(((r.time_ms or math.inf, n) for n, r in self.backends.items() if r.usable))
        order = [n for _, n in timed]
        if self.winner in order:
            order.remove(self.winner)
            order.insert(0, self.winner)
        return [(n, self.backends[n]) for n in order]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape_class": self.shape_class.to_dict()}
        if self.shape is not None:
            out["shape"] = self.shape
        out["problem"] = None if self.problem is None else self.problem.to_dict()
        out["backends"] = {n: self.backends[n].to_dict() for n in sorted(self.backends)}
        out["winner"] = self.winner
        return out


@dataclass
class Results:
    """A whole results file: one device, the software that measured it, entries per shape class."""

    device: dict[str, Any]
    software: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def slug(self) -> str:
        return str(self.device.get("slug", ""))

    def to_dict(self) -> dict[str, Any]:
        software = {str(k): (None if v is None else str(v)) for k, v in self.software.items()}
        device = {str(k): (None if v is None else str(v)) for k, v in self.device.items()}
        return {"schema_version": SCHEMA_VERSION, "device": device, "software": software,
                "entries": {k: self.entries[k].to_dict() for k in sorted(self.entries)}}

    def nearest(self, cls: ShapeClass) -> tuple[Entry | None, float]:
        """The entry whose class is nearest to ``cls`` (see :meth:`ShapeClass.distance`); ties go to
        the larger T, then the larger B*H (the longer, wider tuning is the safer guess)."""
        best: Entry | None = None
        best_key: tuple[float, int, int] = (math.inf, 0, 0)
        for entry in self.entries.values():
            d = cls.distance(entry.shape_class)
            if not math.isfinite(d):
                continue
            key = (d, -entry.shape_class.T, -entry.shape_class.BH)
            if best is None or key < best_key:
                best, best_key = entry, key
        return best, best_key[0]

    def set_backend(self, shape_class: ShapeClass, backend: str, result: BackendResult,
                    problem: Problem | None = None, shape: str | None = None) -> Entry:
        """Record one backend's result for a class (creating the entry) and recompute the winner."""
        entry = self.entries.get(shape_class.key)
        if entry is None:
            entry = Entry(shape_class=shape_class, problem=problem, backends={}, shape=shape)
            self.entries[shape_class.key] = entry
        if problem is not None:
            entry.problem = problem
        if shape is not None:
            entry.shape = shape
        entry.backends[backend] = result
        entry.winner = entry.best()
        return entry


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
# Validation: every error names the file, the place and what is allowed
# ---------------------------------------------------------------------------------------------

def from_mapping(data: Any, source: str = "<memory>") -> Results:
    """Validate a parsed results file and return it typed. Raises :class:`ResultsError`."""

    def fail(where: str, msg: str) -> ResultsError:
        return ResultsError(f"{source}: {where}: {msg}")

    if not isinstance(data, Mapping):
        raise ResultsError(f"{source}: a results file must be a mapping with keys {list(TOP_KEYS)} "
                           f"but got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise fail("top level", f"unknown keys {unknown}; allowed: {list(TOP_KEYS)}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise fail("schema_version", f"must be {SCHEMA_VERSION} (the version this eda-tune reads) "
                                     f"but got {version!r}")
    device = data.get("device")
    if not isinstance(device, Mapping) or not isinstance(device.get("slug"), str) or not device["slug"]:
        raise fail("device", f"must be a mapping with at least a non-empty 'slug' (keys {sorted(DEVICE_KEYS)}) "
                             f"but got {device!r}")
    bad = sorted(set(device) - DEVICE_KEYS)
    if bad:
        raise fail("device", f"unknown keys {bad}; allowed: {sorted(DEVICE_KEYS)}")
    software = data.get("software") or {}
    if not isinstance(software, Mapping):
        raise fail("software", f"must be a mapping of package -> version but got {software!r}")
    raw_entries = data.get("entries") or {}
    if not isinstance(raw_entries, Mapping):
        raise fail("entries", f"must be a mapping of shape-class key -> entry but got {type(raw_entries).__name__}")
    entries: dict[str, Entry] = {}
    for key, raw in raw_entries.items():
        entries[str(key)] = _entry(str(key), raw, lambda msg, k=key: fail(f"entries.{k}", msg))
    return Results(device=dict(device), software=dict(software), entries=entries, source=source)


def _entry(key: str, raw: Any, fail: Any) -> Entry:
    if not isinstance(raw, Mapping):
        raise fail(f"must be a mapping with keys {sorted(ENTRY_KEYS)} but got {raw!r}")
    bad = sorted(set(raw) - ENTRY_KEYS)
    if bad:
        raise fail(f"unknown keys {bad}; allowed: {sorted(ENTRY_KEYS)}")
    sc = raw.get("shape_class")
    if not isinstance(sc, Mapping):
        raise fail(f"'shape_class' must be a mapping {{K, V, dtype, gate, T, BH, training}} but got {sc!r}")
    try:
        shape_class = ShapeClass(**dict(sc))
        for name in ("K", "V", "T", "BH"):
            value = getattr(shape_class, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EdaInputError(f"{name} must be a positive int but got {value!r}")
    except (TypeError, EdaInputError) as err:
        raise fail(f"'shape_class' is not a valid shape class: {err}") from None
    if shape_class.key != key:
        raise fail(f"the key does not match its shape_class, whose key is {shape_class.key!r}")
    problem = None
    if raw.get("problem") is not None:
        if not isinstance(raw["problem"], Mapping):
            raise fail(f"'problem' must be a mapping of Problem fields but got {raw['problem']!r}")
        try:
            problem = Problem.from_dict(raw["problem"])
        except (TypeError, EdaInputError) as err:
            raise fail(f"'problem' is not a valid problem: {err}") from None
    backends_raw = raw.get("backends")
    if not isinstance(backends_raw, Mapping):
        raise fail(f"'backends' must be a mapping of backend name -> result but got {backends_raw!r}")
    backends = {str(n): _backend_result(r, lambda msg, n=n: fail(f"backends.{n}: {msg}"))
                for n, r in backends_raw.items()}
    winner = raw.get("winner")
    if winner is not None and winner not in backends:
        raise fail(f"'winner' must be one of its backends {sorted(backends)} (or null) but got {winner!r}")
    if winner is not None and not backends[winner].usable:
        raise fail(f"'winner' {winner!r} has no config and time")
    shape = raw.get("shape")
    return Entry(shape_class=shape_class, problem=problem, backends=backends,
                 shape=None if shape is None else str(shape), winner=winner)


def _backend_result(raw: Any, fail: Any) -> BackendResult:
    if not isinstance(raw, Mapping):
        raise fail(f"must be a mapping with keys config, time_ms, default_time_ms, trials, failed but got {raw!r}")
    bad = sorted(set(raw) - BACKEND_KEYS)
    if bad:
        raise fail(f"unknown keys {bad}; allowed: {sorted(BACKEND_KEYS)}")
    config = raw.get("config")
    if config is not None:
        if not isinstance(config, Mapping):
            raise fail(f"'config' must be a mapping of tunable -> value (or null) but got {config!r}")
        try:
            config = Config.from_dict(config).to_dict()
        except EdaInputError as err:
            raise fail(f"'config': {err}") from None
    times = {}
    for name in ("time_ms", "default_time_ms"):
        v = raw.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not v > 0):
            raise fail(f"'{name}' must be a number > 0 (ms) or null but got {v!r}")
        times[name] = None if v is None else float(v)
    counts = {}
    for name in ("trials", "failed"):
        v = raw.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise fail(f"'{name}' must be an int >= 0 but got {v!r}")
        counts[name] = v
    if (config is None) != (times["time_ms"] is None):
        raise fail("'config' and 'time_ms' must both be set or both be null")
    extra = {k: v for k, v in raw.items() if k not in {"config", "time_ms", "default_time_ms", "trials", "failed"}}
    for k, v in extra.items():
        if not _is_plain(v):
            raise fail(f"'{k}' must hold plain values only but got {v!r}")
    return BackendResult(config=config, time_ms=times["time_ms"], default_time_ms=times["default_time_ms"],
                         trials=counts["trials"], failed=counts["failed"], extra=dict(extra))


def _is_plain(v: Any) -> bool:
    if v is None or isinstance(v, bool | int | float | str):
        return True
    if isinstance(v, list | tuple):
        return all(_is_plain(x) for x in v)
    if isinstance(v, Mapping):
        return all(isinstance(k, str) and _is_plain(x) for k, x in v.items())
    return False


# ---------------------------------------------------------------------------------------------
# Reading, merging, writing
# ---------------------------------------------------------------------------------------------

def load(path: str | Path) -> Results:
    """Read and validate one results file. Raises :class:`ResultsError` with the file and the place."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ResultsError(f"{path}: cannot read results: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ResultsError(f"{path}: not valid YAML (safe_load; results hold plain values only): {err}") from None
    return from_mapping(data, source=str(path))


def merge(old: Results, new: Results) -> Results:
    """``old`` updated by ``new``: classes and backends ``new`` lacks are kept, winners recomputed.

    The device and software of ``new`` win (they describe the latest measurement)."""
    out = copy.deepcopy(old)
    out.device = {**old.device, **{k: v for k, v in new.device.items() if v is not None}}
    out.software = {**old.software, **new.software}
    for key, entry in new.entries.items():
        mine = out.entries.get(key)
        if mine is None:
            out.entries[key] = copy.deepcopy(entry)
            continue
        mine.backends.update(copy.deepcopy(entry.backends))
        if entry.problem is not None:
            mine.problem = entry.problem
        if entry.shape is not None:
            mine.shape = entry.shape
        mine.winner = mine.best()
    out.source = new.source
    return out


def dump(results: Results) -> str:
    return yaml.safe_dump(results.to_dict(), sort_keys=False, default_flow_style=False, width=120)


def write(path: str | Path, results: Results, merge_existing: bool = True) -> Results:
    """Write ``results`` to ``path``, merged with what the file holds; atomic (temp file + rename).

    A file that exists but does not validate is an error (never silently overwritten)."""
    path = Path(path)
    if merge_existing and path.exists():
        results = merge(load(path), results)
    text = dump(results)
    from_mapping(yaml.safe_load(text), source=str(path))  # what we write must read back
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    results.source = str(path)
    return results


def find(slug: str, dirs: list[Path] | None = None) -> Results | None:
    """The results for ``slug`` from every results folder, merged (later folders win); None if none."""
    found: Results | None = None
    for d in dirs if dirs is not None else results_dirs():
        path = d / f"{slug}.yaml"
        if not path.is_file():
            continue
        res = load(path)
        found = res if found is None else merge(found, res)
    return found


def new_results(device: Mapping[str, Any], software: Mapping[str, Any] | None = None) -> Results:
    return Results(device=dict(device), software=dict(software or {}))
