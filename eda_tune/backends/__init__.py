"""Backends: the interface and the registry."""

from eda_tune.backends.base import Backend, EdaKernel
from eda_tune.backends.registry import (
    all_backends,
    available_backends,
    backend_names,
    broken_backends,
    get_backend,
    register,
    unregister,
)

__all__ = ["Backend", "EdaKernel", "all_backends", "available_backends", "backend_names",
           "broken_backends", "get_backend", "register", "unregister"]
