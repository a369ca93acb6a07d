"""The backend registry: built-in backends plus any registered through the entry-point group
``eda_tune.backends`` (an entry point names a zero-argument callable returning a Backend)."""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from eda_tune.backends.base import Backend
from eda_tune.errors import EdaInputError

log = logging.getLogger(__name__)

#: name -> "module:attribute" of the built-in backends; imported lazily so that a backend whose
#: package is missing never breaks the others.
BUILTIN: dict[str, str] = {
    "triton": "kernel_variants.triton.backend:TritonBackend",
    "tilelang": "kernel_variants.tilelang.backend:TileLangBackend",
    "torch_compile": "kernel_variants.torch_chunk.backend:TorchCompileBackend",
    "torch": "kernel_variants.torch_chunk.backend:TorchBackend",
}

_BACKENDS: dict[str, Backend] = {}
_BROKEN: dict[str, str] = {}
_LOADED = False


def register(backend: Backend, *, replace: bool = False) -> Backend:
    """Add a backend instance; its name must be new unless ``replace``."""
    if not isinstance(backend, Backend):
        raise EdaInputError(f"register() expects a Backend instance but got {type(backend).__name__}")
    if not backend.name:
        raise EdaInputError(f"backend {backend!r} has an empty name")
    if backend.name in _BACKENDS and not replace:
        raise EdaInputError(f"a backend named {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend
    _BROKEN.pop(backend.name, None)
    return backend


def unregister(name: str) -> None:
    _BACKENDS.pop(name, None)


def _load_target(target: str) -> Backend:
    module_name, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj if isinstance(obj, Backend) else obj()


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for name, target in BUILTIN.items():
        if name in _BACKENDS:
            continue
        try:
            _BACKENDS[name] = _load_target(target)
        except Exception as err:  # a backend whose module cannot import is reported, not fatal
            _BROKEN[name] = f"{type(err).__name__}: {err}"
            log.debug("backend %s failed to import: %s", name, err)
    for ep in entry_points(group="eda_tune.backends"):
        if ep.name in _BACKENDS:
            continue
        try:
            backend = _load_target(ep.value)
            _BACKENDS[backend.name] = backend
        except Exception as err:
            _BROKEN[ep.name] = f"{type(err).__name__}: {err}"


def all_backends() -> list[Backend]:
    """Every registered backend (available or not), most preferred first."""
    _load_all()
    return sorted(_BACKENDS.values(), key=lambda b: (b.priority, b.name))


def broken_backends() -> dict[str, str]:
    """Backends whose module failed to import, with the error."""
    _load_all()
    return dict(_BROKEN)


def backend_names() -> list[str]:
    return [b.name for b in all_backends()] + sorted(broken_backends())


def get_backend(name: str) -> Backend:
    if not isinstance(name, str):
        raise EdaInputError(f"backend must be a string name but got {type(name).__name__}")
    _load_all()
    if name in _BACKENDS:
        return _BACKENDS[name]
    if name in _BROKEN:
        raise EdaInputError(f"backend {name!r} failed to load: {_BROKEN[name]}")
    raise EdaInputError(f"backend must be one of {backend_names()} but got {name!r}")


def available_backends() -> list[Backend]:
    return [b for b in all_backends() if b.is_available()[0]]
