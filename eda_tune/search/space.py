"""Search spaces: ``search_spaces/<backend>.yaml`` parsed, validated and queried.

Format::

    backend: triton
    parameters:
      BT: {choices: [16, 32, 64]}                  # categorical
      num_stages: {type: int, low: 1, high: 4}     # int range (step 1, or `step:`; `log: true`)
      ratio: {type: float, low: 0.1, high: 1.0}    # float range (`log: true` for log scale)
    constraints:                                    # Python expressions over the tunables, the
      - expr: "BK <= next_pow2(K)"                  # problem (B, T, H, K, V, dtype, gate, training,
        reason: "BK larger than the padded K"       # varlen, ...) and helper functions
    default: {BT: 64, num_stages: 2}

A config that breaks a constraint is rejected before anything is compiled; the reason is
what the YAML says, with the values that broke it.
"""

from __future__ import annotations

import ast
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from eda_tune.errors import ConfigError, SearchSpaceError
from eda_tune.problem import Config, Problem

_PARAM_KEYS = {"choices", "type", "low", "high", "step", "log", "help"}


def next_pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def ceil_div(a: int, b: int) -> int:
    return -(-int(a) // int(b))


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}

HELPERS: dict[str, Any] = {
    "next_pow2": next_pow2,
    "ceil_div": ceil_div,
    "min": min,
    "max": max,
    "abs": abs,
    "log2": math.log2,
    "True": True,
    "False": False,
    "None": None,
}

PROBLEM_NAMES = ("B", "T", "H", "K", "V", "dtype", "gate", "initial_state", "final_state", "l2norm",
                 "training", "device", "varlen", "N", "dtype_bytes")

#: The shared-memory budget per block assumed when no device says otherwise (H100/H200: 227 KiB).
DEFAULT_SMEM_LIMIT = 232448


@dataclass(frozen=True)
class Parameter:
    name: str
    choices: tuple[Any, ...] | None = None
    type: str = "categorical"
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    def contains(self, value: Any) -> tuple[bool, str]:
        if self.choices is not None:
            if any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in self.choices):
                return True, ""
            return False, f"must be one of {list(self.choices)} but got {value!r}"
        assert self.low is not None and self.high is not None
        if self.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            return False, f"must be an int in [{int(self.low)}, {int(self.high)}] but got {value!r}"
        if self.type == "float" and (not isinstance(value, int | float) or isinstance(value, bool)):
            return False, f"must be a number in [{self.low}, {self.high}] but got {value!r}"
        if not (self.low <= value <= self.high):
            return False, f"must be in [{self.low}, {self.high}] but got {value!r}"
        if self.type == "int" and self.step and (value - self.low) % self.step:
            return False, f"must be {self.low} + a multiple of {self.step} but got {value!r}"
        return True, ""

    def values(self) -> list[Any] | None:
        """Every value, when the parameter is finite (categorical or a stepped int range)."""
        if self.choices is not None:
            return list(self.choices)
        if self.type == "int":
            assert self.low is not None and self.high is not None
            if self.log:
                out, v = [], int(self.low)
                while v <= self.high:
                    out.append(v)
                    v *= 2
                return out
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return None

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            if self.log:
                # powers of two stay powers of two: sample the exponent
                exps = [int(math.log2(v)) for v in self.values() or []]
                return 2 ** trial.suggest_int(f"{self.name}__log2", exps[0], exps[-1])
            return trial.suggest_int(self.name, int(self.low or 0), int(self.high or 0), step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low or 0), float(self.high or 0), log=self.log)


@dataclass(frozen=True)
class Constraint:
    expr: str
    reason: str
    code: Any = field(compare=False, repr=False)
    names: frozenset[str] = field(compare=False, repr=False, default=frozenset())


@dataclass(frozen=True)
class SearchSpace:
    backend: str
    parameters: dict[str, Parameter]
    constraints: tuple[Constraint, ...]
    default_values: dict[str, Any]
    source: str = "<memory>"
    # partial configs (completed with the default) that every study tries before sampling:
    # what earlier measurements found good, so a short tuning run starts from them
    seeds: tuple[dict[str, Any], ...] = ()

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Any, source: str = "<memory>", extra_names: tuple[str, ...] = ()) -> SearchSpace:
        def fail(msg: str) -> SearchSpaceError:
            return SearchSpaceError(f"{source}: {msg}")

        if not isinstance(data, Mapping):
            raise fail(f"expected a mapping with keys backend, parameters, constraints, default; "
                       f"got {type(data).__name__}")
        unknown = set(data) - {"backend", "parameters", "constraints", "default", "description", "seeds"}
        if unknown:
            raise fail(f"unknown top-level keys {sorted(unknown)}; allowed: backend, parameters, "
                       "constraints, default, seeds, description")
        backend = data.get("backend")
        if not isinstance(backend, str) or not backend:
            raise fail(f"'backend' must be a non-empty string but got {backend!r}")
        raw_params = data.get("parameters")
        if not isinstance(raw_params, Mapping) or not raw_params:
            raise fail("'parameters' must be a non-empty mapping of name -> {choices: [...]} "
                       "or {type: int|float, low, high}")
        params: dict[str, Parameter] = {}
        for name, spec in raw_params.items():
            params[str(name)] = _parse_param(str(name), spec, fail)
        raw_cons = data.get("constraints") or []
        if not isinstance(raw_cons, list):
            raise fail(f"'constraints' must be a list of {{expr, reason}} but got {type(raw_cons).__name__}")
        allowed = set(params) | set(PROBLEM_NAMES) | set(HELPERS) | set(extra_names) | {"smem_limit"}
        cons = []
        for i, c in enumerate(raw_cons):
            if isinstance(c, str):
                c = {"expr": c}
            if not isinstance(c, Mapping) or not isinstance(c.get("expr"), str):
                raise fail(f"constraint #{i} must be a string or {{expr: str, reason: str}} but got {c!r}")
            expr = c["expr"]
            try:
                tree = ast.parse(expr, mode="eval")
            except SyntaxError as err:
                raise fail(f"constraint #{i} {expr!r} is not a valid expression: {err.msg}") from None
            names = frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name))
            bad = sorted(names - allowed)
            if bad:
                raise fail(f"constraint #{i} {expr!r} uses unknown names {bad}; allowed: tunables "
                           f"{sorted(params)}, problem fields {list(PROBLEM_NAMES)}, helpers "
                           f"{sorted(set(HELPERS) | set(extra_names) | {'smem_limit'})}")
            cons.append(Constraint(expr=expr, reason=str(c.get("reason", expr)),
                                   code=compile(tree, f"{source}:constraint{i}", "eval"), names=names))
        default = data.get("default")
        if not isinstance(default, Mapping):
            raise fail(f"'default' must be a mapping of every tunable to a value but got {default!r}")
        missing = sorted(set(params) - set(default))
        extra = sorted(set(default) - set(params))
        if missing or extra:
            raise fail(f"'default' must name every tunable exactly once: missing {missing}, unknown {extra}")
        for name, value in default.items():
            ok, why = params[name].contains(value)
            if not ok:
                raise fail(f"default {name} {why}")
        raw_seeds = data.get("seeds") or []
        if not isinstance(raw_seeds, list):
            raise fail(f"'seeds' must be a list of partial configs but got {type(raw_seeds).__name__}")
        seeds = []
        for i, seed in enumerate(raw_seeds):
            if not isinstance(seed, Mapping) or not seed:
                raise fail(f"seed #{i} must be a non-empty mapping of tunables to values but got {seed!r}")
            for name, value in seed.items():
                if name not in params:
                    raise fail(f"seed #{i} names unknown tunable {name!r}; tunables: {sorted(params)}")
                ok, why = params[name].contains(value)
                if not ok:
                    raise fail(f"seed #{i}: {name} {why}")
            seeds.append(dict(seed))
        return cls(backend=backend, parameters=params, constraints=tuple(cons),
                   default_values=dict(default), source=source, seeds=tuple(seeds))

    @classmethod
    def load(cls, path: str | Path, extra_names: tuple[str, ...] = ()) -> SearchSpace:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise SearchSpaceError(f"{path}: cannot read search space: {err}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SearchSpaceError(f"{path}: not valid YAML: {err}") from None
        return cls.from_mapping(data, source=str(path), extra_names=extra_names)

    # -- queries ---------------------------------------------------------------------------
    def namespace(self, problem: Problem, values: Mapping[str, Any],
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        ns: dict[str, Any] = dict(HELPERS)
        ns.update({"smem_limit": DEFAULT_SMEM_LIMIT})
        ns.update({n: getattr(problem, n) for n in PROBLEM_NAMES if n != "dtype_bytes"})
        ns["dtype_bytes"] = DTYPE_BYTES[problem.dtype]
        if extra:
            ns.update(extra)
        ns.update(values)
        return ns

    def check(self, problem: Problem, config: Config | Mapping[str, Any],
              extra: Mapping[str, Any] | None = None) -> tuple[bool, str]:
        """(ok, reason): every tunable known, in range, and every constraint holds."""
        values = config.to_dict() if isinstance(config, Config) else dict(config)
        unknown = sorted(set(values) - set(self.parameters))
        if unknown:
            return False, (f"config of backend {self.backend!r} has unknown tunables {unknown}; "
                           f"known: {sorted(self.parameters)}")
        missing = sorted(set(self.parameters) - set(values))
        if missing:
            return False, f"config of backend {self.backend!r} lacks tunables {missing}"
        for name, value in values.items():
            ok, why = self.parameters[name].contains(value)
            if not ok:
                return False, f"config {name} {why} (backend {self.backend!r})"
        ns = self.namespace(problem, values, extra)
        for c in self.constraints:
            try:
                holds = bool(eval(c.code, {"__builtins__": {}}, ns))  # noqa: S307 - names checked at load
            except Exception as err:  # a constraint that cannot be evaluated rejects the config
                return False, f"constraint {c.expr!r} failed to evaluate: {type(err).__name__}: {err}"
            if not holds:
                shown = ", ".join(f"{n}={ns[n]!r}" for n in sorted(c.names) if n in ns and not callable(ns[n]))
                return False, f"{c.reason} ({c.expr}; {shown})"
        return True, ""

    def complete(self, config: Mapping[str, Any] | Config | None, base: Mapping[str, Any]) -> dict[str, Any]:
        """A partial user config filled with ``base`` values; unknown names are an error."""
        values = dict(base)
        if config is not None and not isinstance(config, Mapping | Config):
            raise ConfigError(f"config must be a mapping of tunables but got {type(config).__name__}")
        given = config.to_dict() if isinstance(config, Config) else dict(config or {})
        unknown = sorted(set(given) - set(self.parameters))
        if unknown:
            raise ConfigError(f"config: unknown tunables {unknown} for backend {self.backend!r}; "
                              f"known: {sorted(self.parameters)}")
        values.update(given)
        return values

    def validate(self, problem: Problem, config: Config | Mapping[str, Any],
                 extra: Mapping[str, Any] | None = None) -> Config:
        ok, why = self.check(problem, config, extra)
        if not ok:
            raise ConfigError(f"config: {why}")
        return Config.from_dict(config.to_dict() if isinstance(config, Config) else config)

    def is_finite(self) -> bool:
        return all(p.values() is not None for p in self.parameters.values())

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every config of a finite space (constraints not applied)."""
        if not self.is_finite():
            raise SearchSpaceError(f"{self.source}: the space has continuous parameters, no grid")
        names = list(self.parameters)
        for combo in itertools.product(*(self.parameters[n].values() or [] for n in names)):
            yield dict(zip(names, combo))

    def grid_size(self) -> int:
        return math.prod(len(p.values() or []) for p in self.parameters.values())

    def valid_grid(self, problem: Problem, extra: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return [c for c in self.grid() if self.check(problem, c, extra)[0]]

    def default(self, problem: Problem, extra: Mapping[str, Any] | None = None) -> Config:
        """The YAML default if it holds for ``problem``; else the first of the space's seeds (each
        completed with the default: the best configs measured at other shapes) that holds; else the
        valid config of the grid nearest the default."""
        if self.check(problem, self.default_values, extra)[0]:
            return Config.from_dict(self.default_values)
        for seed in self.seeds:
            cand = {**self.default_values, **seed}
            if self.check(problem, cand, extra)[0]:
                return Config.from_dict(cand)
        if self.is_finite():
            for cand in self._near_default():
                if self.check(problem, cand, extra)[0]:
                    return Config.from_dict(cand)
        why = self.check(problem, self.default_values, extra)[1]
        raise ConfigError(f"backend {self.backend!r}: no config of {self.source} fits {problem.key}: {why}")

    def _near_default(self) -> Iterator[dict[str, Any]]:
        """The grid's configs by how many values differ from the default (fewest first; in grid
        order among equals), built distance by distance: the grid itself can hold millions."""
        names = list(self.parameters)
        choices = [list(self.parameters[n].values() or []) for n in names]
        base = [self.default_values[n] for n in names]
        home = [c.index(b) if b in c else -1 for c, b in zip(choices, base)]  # -1: default off the grid
        for d in range(1, len(names) + 1):
            found: list[tuple[int, ...]] = []
            for which in itertools.combinations(range(len(names)), d):
                others = [[i for i, v in enumerate(choices[j]) if v != base[j]] for j in which]
                for picks in itertools.product(*others):
                    at = list(home)
                    for j, i in zip(which, picks):
                        at[j] = i
                    found.append(tuple(at))
            for pos in sorted(found):
                yield {n: (choices[j][i] if i >= 0 else base[j]) for j, (n, i) in enumerate(zip(names, pos))}

    def pinned(self, problem: Problem, extra: Mapping[str, Any] | None = None,
               max_combos: int = 4096) -> dict[str, Any]:
        """The tunables that the constraints leave one value for ``problem`` (name -> that value).

        Each constraint is checked on every combination of the values of the tunables it names
        (where they are finite and not too many), and a value that no combination satisfying it
        uses is dropped; repeated until nothing changes. Only values that no valid config can hold
        are dropped, so sampling the rest loses nothing. E.g. the backward's tunables of the triton
        space for a forward-only problem: a sampler that draws them anyway breaks a constraint on
        nearly every draw."""
        domains = {n: p.values() for n, p in self.parameters.items()}
        names = [n for n, d in domains.items() if d is not None]
        base = self.namespace(problem, {}, extra)
        changed = True
        while changed:
            changed = False
            for c in self.constraints:
                mine = [n for n in names if n in c.names]
                if any(domains[n] is None for n in c.names if n in domains):
                    continue  # names a tunable with a continuous range: not enumerated
                if not mine or math.prod(len(domains[n] or ()) for n in mine) > max_combos:
                    continue
                keep: dict[str, list[Any]] = {n: [] for n in mine}
                for combo in itertools.product(*(domains[n] or () for n in mine)):
                    ns = {**base, **dict(zip(mine, combo))}
                    try:
                        holds = bool(eval(c.code, {"__builtins__": {}}, ns))  # noqa: S307 - names checked at load
                    except Exception:  # as in check: a constraint that cannot be evaluated rejects
                        holds = False
                    if holds:
                        for n, v in zip(mine, combo):
                            if not any(v == k and type(v) is type(k) for k in keep[n]):
                                keep[n].append(v)
                for n in mine:
                    if len(keep[n]) < len(domains[n] or ()):
                        domains[n] = keep[n]
                        changed = True
                if any(not keep[n] for n in mine):  # nothing fits: leave it to check() to say why
                    return {}
        return {n: d[0] for n, d in domains.items()
                if d is not None and len(d) == 1 and len(self.parameters[n].values() or ()) > 1}

    def suggest(self, trial: Any, fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Sample one config through an Optuna trial (constraints are checked by the caller);
        the tunables in ``fixed`` take their value there and are not sampled."""
        fixed = fixed or {}
        return {name: fixed[name] if name in fixed else p.suggest(trial) for name, p in self.parameters.items()}


def _parse_param(name: str, spec: Any, fail: Callable[[str], SearchSpaceError]) -> Parameter:
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, Mapping):
        raise fail(f"parameter {name!r} must be a list of choices or a mapping but got {spec!r}")
    unknown = set(spec) - _PARAM_KEYS
    if unknown:
        raise fail(f"parameter {name!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_PARAM_KEYS)}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise fail(f"parameter {name!r}: 'choices' must be a non-empty list but got {choices!r}")
        for c in choices:
            if not isinstance(c, bool | int | float | str):
                raise fail(f"parameter {name!r}: choices must be plain bool/int/float/str but got {c!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise fail(f"parameter {name!r}: choices repeat: {choices!r}")
        return Parameter(name=name, choices=tuple(choices))
    kind = spec.get("type")
    if kind not in ("int", "float"):
        raise fail(f"parameter {name!r}: 'type' must be 'int' or 'float' (or give 'choices') but got {kind!r}")
    low, high = spec.get("low"), spec.get("high")
    if not isinstance(low, int | float) or not isinstance(high, int | float) or isinstance(low, bool):
        raise fail(f"parameter {name!r}: 'low' and 'high' must be numbers but got {low!r}, {high!r}")
    if kind == "int" and (not isinstance(low, int) or not isinstance(high, int)):
        raise fail(f"parameter {name!r}: an int range needs int 'low' and 'high' but got {low!r}, {high!r}")
    if low > high:
        raise fail(f"parameter {name!r}: 'low' must be <= 'high' but got {low} > {high}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise fail(f"parameter {name!r}: a log range needs 'low' > 0 but got {low}")
    if log and kind == "int" and (int(low) & (int(low) - 1) or int(high) & (int(high) - 1)):
        raise fail(f"parameter {name!r}: an int log range spans powers of two; got {low}..{high}")
    step = spec.get("step")
    if step is not None and (not isinstance(step, int | float) or step <= 0):
        raise fail(f"parameter {name!r}: 'step' must be > 0 but got {step!r}")
    return Parameter(name=name, type=kind, low=low, high=high, step=step, log=log)


def search_space_path(backend: str) -> Path:
    """Where a backend's shipped search space lives (inside the installed package)."""
    return Path(str(resources.files("search_spaces").joinpath(f"{backend}.yaml")))


def load_search_space(backend: str, extra_names: tuple[str, ...] = ()) -> SearchSpace:
    path = search_space_path(backend)
    if not path.exists():
        raise SearchSpaceError(f"no search space for backend {backend!r}: expected {path}")
    space = SearchSpace.load(path, extra_names=extra_names)
    if space.backend != backend:
        raise SearchSpaceError(f"{path}: 'backend' says {space.backend!r} but the file is for {backend!r}")
    return space
