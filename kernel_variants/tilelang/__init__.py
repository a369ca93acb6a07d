"""TileLang backend of eda-tune: EDA's chunked forward as generated TileLang kernels.

``kernels`` holds the kernel generators (importable without TileLang; it is imported when a
generator runs); ``backend`` the :class:`TileLangBackend` registered as ``tilelang``.
"""

from __future__ import annotations

__all__ = ["TileLangBackend"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name == "TileLangBackend":
        from kernel_variants.tilelang.backend import TileLangBackend

        return TileLangBackend
    raise AttributeError(name)
