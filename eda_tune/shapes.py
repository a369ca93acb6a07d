"""Shape files: ``shapes: [{name, B, T, H, K, V, dtype, gate, ...}]`` -> named Problems."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from eda_tune.errors import EdaInputError
from eda_tune.problem import Problem

REQUIRED = ("B", "T", "H", "K", "V")


@dataclass(frozen=True)
class NamedShape:
    name: str
    problem: Problem


def parse_shapes(data: Any, source: str = "<memory>", device: str = "cuda") -> list[NamedShape]:
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list) or not data["shapes"]:
        raise EdaInputError(f"{source}: a shapes file must be a mapping with a non-empty list 'shapes' "
                            f"of {{name, B, T, H, K, V, dtype, gate}}; got {type(data).__name__}")
    out, seen = [], set()
    for i, raw in enumerate(data["shapes"]):
        if not isinstance(raw, dict):
            raise EdaInputError(f"{source}: shapes[{i}] must be a mapping but got {raw!r}")
        raw = dict(raw)
        name = str(raw.pop("name", f"shape{i}"))
        if name in seen:
            raise EdaInputError(f"{source}: shapes[{i}]: the name {name!r} is used twice")
        seen.add(name)
        missing = [k for k in REQUIRED if k not in raw]
        if missing:
            raise EdaInputError(f"{source}: shapes[{i}] ({name}) lacks {missing}; required: {list(REQUIRED)}")
        raw.setdefault("device", device)
        try:
            problem = Problem.from_dict(raw)
        except (TypeError, ValueError) as err:
            raise EdaInputError(f"{source}: shapes[{i}] ({name}): {err}") from None
        out.append(NamedShape(name, problem))
    return out


def load_shapes(path: str | Path, device: str = "cuda") -> list[NamedShape]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise EdaInputError(f"--shapes: cannot read {path}: {err}") from None
    except yaml.YAMLError as err:
        raise EdaInputError(f"--shapes: {path} is not valid YAML: {err}") from None
    return parse_shapes(data, str(path), device)


def builtin_shapes(name: str = "standard", device: str = "cuda") -> list[NamedShape]:
    """``standard`` (S1-S5, V1 of BENCHMARKS.md) or ``cpu`` (tiny shapes for CPU runs)."""
    path = resources.files("eda_tune.data").joinpath(f"{name}_shapes.yaml")
    return parse_shapes(yaml.safe_load(path.read_text()), f"eda_tune/data/{name}_shapes.yaml", device)
