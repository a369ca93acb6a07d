"""The one interface every backend speaks: the dispatcher, the tuner, the CLI and the tests use only it."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, Protocol

import torch

from eda_tune.errors import BackendUnavailable, ConfigError
from eda_tune.problem import Config, Problem
from eda_tune.search.space import SearchSpace, load_search_space


class EdaKernel(Protocol):
    """What ``Backend.build`` returns: the op for one (problem, config), autograd-aware if training.

    q, k, e [B, T, H, K]; v [B, T, H, V]; g, beta, gamma [B, T, H] (g may be None);
    initial_state [N, H, K, V] float32 or None; cu_seqlens int [N + 1] or None.
    Returns (o [B, T, H, V] in v's dtype, final_state [N, H, K, V] float32 or None).
    """

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                 g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, scale: float,
                 initial_state: torch.Tensor | None, output_final_state: bool,
                 cu_seqlens: torch.Tensor | None, use_qk_l2norm_in_kernel: bool
                 ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class Backend(ABC):
    """A family of EDA kernels generated from a config.

    Subclasses set ``name`` (also the name of ``search_spaces/<name>.yaml``), ``priority``
    (lower is preferred when nothing else decides) and ``supports_backward``.
    """

    name: str = ""
    priority: int = 100
    supports_backward: bool = True
    devices: tuple[str, ...] = ("cpu", "cuda")

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], EdaKernel] = {}
        self._lock = threading.Lock()

    # -- what a backend must say --------------------------------------------------------------
    @abstractmethod
    def is_available(self) -> tuple[bool, str]:
        """(ok, reason): can this backend run in this process at all (packages, devices)?"""

    def supports(self, problem: Problem) -> tuple[bool, str]:
        """(ok, reason): can it compute ``problem``? The base checks device and training."""
        if problem.device not in self.devices:
            return False, f"{self.name} runs on {list(self.devices)}, not {problem.device!r}"
        if problem.training and not self.supports_backward:
            return False, f"{self.name} has no backward kernels (forward only)"
        return True, ""

    @abstractmethod
    def _build(self, problem: Problem, config: Config) -> EdaKernel:
        """Compile or assemble the kernel for (problem, config); called once per cache key."""

    # -- search space and configs ---------------------------------------------------------------
    @cached_property
    def search_space(self) -> SearchSpace:
        return load_search_space(self.name, extra_names=tuple(self.constraint_vars_names()))

    def constraint_vars_names(self) -> list[str]:
        """Names a backend adds to its constraint expressions (see ``constraint_vars``)."""
        return []

    def constraint_vars(self, problem: Problem) -> Mapping[str, Any]:
        """Extra values or functions for constraint expressions (e.g. the device's smem limit)."""
        return {}

    def default_config(self, problem: Problem) -> Config:
        return self.search_space.default(problem, self.constraint_vars(problem))

    def check_config(self, problem: Problem, config: Config | Mapping[str, Any]) -> tuple[bool, str]:
        return self.search_space.check(problem, config, self.constraint_vars(problem))

    def resolve_config(self, problem: Problem, config: Config | Mapping[str, Any] | None) -> Config:
        """A full, validated config: the user's values over the default. Raises ConfigError."""
        base = self.default_config(problem).to_dict()
        values = self.search_space.complete(config, base)
        ok, why = self.check_config(problem, values)
        if not ok:
            raise ConfigError(f"config: {why}")
        return Config.from_dict(values)

    # -- building, cached per process -------------------------------------------------------------
    def build(self, problem: Problem, config: Config | Mapping[str, Any] | None = None) -> EdaKernel:
        ok, why = self.is_available()
        if not ok:
            raise BackendUnavailable(f"backend {self.name!r} is not available: {why}")
        ok, why = self.supports(problem)
        if not ok:
            raise BackendUnavailable(f"backend {self.name!r} does not support {problem.key}: {why}")
        cfg = self.resolve_config(problem, config)
        key = (problem.key, cfg.key)
        fn = self._cache.get(key)
        if fn is None:
            with self._lock:
                fn = self._cache.get(key)
                if fn is None:
                    fn = self._build(problem, cfg)
                    self._cache[key] = fn
        return fn

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


BuildFn = Callable[[Problem, Config], EdaKernel]
