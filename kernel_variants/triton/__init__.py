"""Backend ``triton``: EDA chunk kernels (forward: W/U, state recurrence, output; backward:
recompute, the recurrence's reverse pass, the intra-chunk backward). See NOTES.md."""

from __future__ import annotations

__all__ = ["TritonBackend"]


def __getattr__(name: str):  # lazy: importing the package must not import triton
    if name == "TritonBackend":
        from kernel_variants.triton.backend import TritonBackend

        return TritonBackend
    raise AttributeError(name)
