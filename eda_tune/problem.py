"""Problems (what is computed), configs (how) and shape classes (what tuning is shared by).

A :class:`Problem` describes one call of ``chunk_eda``: shapes, dtype and options. A
:class:`Config` holds a backend's tunables. Both are frozen, hashable and have a stable
text ``key`` used for caches, Optuna study names and YAML results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from eda_tune.errors import ConfigError, EdaInputError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}


def dtype_name(dtype: torch.dtype | str) -> str:
    """Canonical name of a dtype ("bfloat16"), from a torch dtype or a name."""
    if isinstance(dtype, str):
        name = dtype.replace("torch.", "")
        aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
                   "float": "float32", "fp64": "float64", "double": "float64"}
        name = aliases.get(name, name)
        if name not in DTYPES:
            raise EdaInputError(f"dtype must be one of {sorted(DTYPES)} but got {dtype!r}")
        return name
    if dtype not in DTYPE_NAMES:
        raise EdaInputError(f"dtype must be one of {sorted(DTYPES)} but got {dtype}")
    return DTYPE_NAMES[dtype]


@dataclass(frozen=True)
class Problem:
    """One EDA call: q, k, e [B, T, H, K]; v [B, T, H, V]; N sequences (N = B, or len(cu_seqlens) - 1).

    ``T`` is the padded/packed time length; ``max_len`` the longest sequence (== T without varlen).
    """

    B: int
    T: int
    H: int
    K: int
    V: int
    dtype: str = "bfloat16"
    gate: bool = True
    num_seqs: int = 0  # 0: no cu_seqlens; else the number of packed sequences
    initial_state: bool = False
    final_state: bool = False
    l2norm: bool = False
    training: bool = False
    device: str = "cuda"

    def __post_init__(self) -> None:
        for name in ("B", "T", "H", "K", "V"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EdaInputError(f"Problem.{name} must be a positive int but got {value!r}")
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if self.num_seqs < 0:
            raise EdaInputError(f"Problem.num_seqs must be >= 0 but got {self.num_seqs}")

    @property
    def varlen(self) -> bool:
        return self.num_seqs > 0

    @property
    def N(self) -> int:
        return self.num_seqs if self.varlen else self.B

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def key(self) -> str:
        flags = "".join(
            c for c, on in (("g", self.gate), ("h", self.initial_state), ("f", self.final_state),
                            ("n", self.l2norm), ("t", self.training)) if on
        )
        vl = f"_N{self.num_seqs}" if self.varlen else ""
        return (f"B{self.B}_T{self.T}_H{self.H}_K{self.K}_V{self.V}_{self.dtype}{vl}"
                f"_{flags or '-'}_{self.device}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise EdaInputError(f"unknown problem fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> Problem:
        data = self.to_dict()
        data.update(changes)
        return Problem(**data)


@dataclass(frozen=True)
class Config:
    """A backend's tunables, as sorted (name, value) pairs of plain values."""

    items: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Config | None) -> Config:
        if data is None:
            return cls()
        if isinstance(data, Config):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"config must be a mapping of tunables but got {type(data).__name__}")
        return cls(tuple(sorted((str(k), _plain(v)) for k, v in data.items())))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.items)

    def __getitem__(self, name: str) -> Any:
        for k, v in self.items:
            if k == name:
                return v
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    @property
    def key(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.items) or "-"


def _plain(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    raise ConfigError(f"config values must be plain bool/int/float/str but got {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# Shape classes: the unit of tuning. Documented in the README ("Shape classes").
# ---------------------------------------------------------------------------------------------

T_BUCKETS = (256, 1024, 4096, 16384, 65536)
BH_BUCKETS = (8, 32, 128, 512)


def _bucket(value: int, buckets: tuple[int, ...]) -> int:
    """Nearest bucket in log scale (ties go to the larger bucket)."""
    return min(buckets, key=lambda b: (abs(math.log2(value) - math.log2(b)), -b))


@dataclass(frozen=True)
class ShapeClass:
    """Problems that share one tuned config: same K, V, dtype, gate, training, and near T and B*H."""

    K: int
    V: int
    dtype: str
    gate: bool
    T: int
    BH: int
    training: bool = False

    @classmethod
    def of(cls, problem: Problem) -> ShapeClass:
        # a varlen call's cost follows its packed length over the sequences it holds
        t = problem.T // max(problem.N, 1) if problem.varlen else problem.T
        bh = problem.N * problem.H
        return cls(K=problem.K, V=problem.V, dtype=problem.dtype, gate=problem.gate,
                   T=_bucket(max(t, 1), T_BUCKETS), BH=_bucket(bh, BH_BUCKETS), training=problem.training)

    @property
    def key(self) -> str:
        return (f"K{self.K}_V{self.V}_{self.dtype}_{'g' if self.gate else 'nog'}_T{self.T}_BH{self.BH}"
                f"{'_train' if self.training else ''}")

    def representative(self, device: str = "cuda") -> Problem:
        """A concrete problem of this class (used when tuning a class with no explicit shape)."""
        H = 16 if self.BH >= 16 else self.BH
        B = max(self.BH // H, 1)
        return Problem(B=B, T=self.T, H=H, K=self.K, V=self.V, dtype=self.dtype, gate=self.gate,
                       training=self.training, device=device)

    def distance(self, other: ShapeClass) -> float:
        """How far two classes are, for the dispatcher's nearest-class rule (inf if incompatible)."""
        if (self.K, self.V, self.dtype, self.gate) != (other.K, other.V, other.dtype, other.gate):
            return math.inf
        d = abs(math.log2(self.T) - math.log2(other.T)) + abs(math.log2(self.BH) - math.log2(other.BH))
        if self.training != other.training:
            d += 100.0
        return d

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
