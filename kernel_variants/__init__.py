"""Kernel generators, one sub-package per backend (each with a ``backend.py``)."""
