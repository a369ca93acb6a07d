"""Which machine are we on: a stable slug per GPU type (or CPU model) names its results file.

Slug rule (documented in docs/tuning.md): take the device name as the driver reports it
(``torch.cuda.get_device_name``, e.g. ``"NVIDIA H100 80GB HBM3"``; for a CPU the ``model name`` of
``/proc/cpuinfo`` or ``platform.processor()``), drop a leading ``NVIDIA``, the trademarks ``(R)``,
``(TM)`` and a CPU's clock (``@ 2.70GHz``) and the words ``CPU`` / ``Processor``, lower-case it and
join the runs of letters and digits with ``-``: ``h100-80gb-hbm3``, ``h200``, ``a100-sxm4-80gb``.
A CPU slug starts with ``cpu-`` (``cpu-amd-epyc``). Two cards of one type share a slug; a card
whose memory or interconnect differs (PCIe vs SXM, 80 vs 94 GB) gets its own, as its name differs.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DeviceInfo:
    """One device type: ``kind`` is ``cuda`` or ``cpu``; ``compute_capability`` like ``"9.0"``."""

    kind: str
    name: str
    slug: str
    compute_capability: str | None = None
    driver: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the results file (``kind`` is implied by the slug)."""
        d = asdict(self)
        d.pop("kind")
        return d


_DROP = re.compile(r"\((?:R|TM|C)\)|®|™|@\s*[\d.]+\s*[GM]Hz|\b(?:CPU|Processor|\d+-Core)\b", re.IGNORECASE)


def slugify(name: str, prefix: str = "") -> str:
    """The stable slug of a device name (see the module docstring for the rule)."""
    text = name.strip()
    if text.upper().startswith("NVIDIA "):
        text = text[len("NVIDIA "):]
    text = _DROP.sub(" ", text)
    slug = "-".join(re.findall(r"[a-z0-9]+", text.lower()))
    if not slug:
        slug = "unknown"
    return f"{prefix}{slug}" if prefix else slug


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``, else the machine)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version (``nvidia-smi``), or None when it cannot be asked."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.stdout.strip().splitlines()
    return first[0].strip() if out.returncode == 0 and first else None


@functools.cache
def _cuda_info(index: int, with_driver: bool) -> DeviceInfo:
    name = torch.cuda.get_device_name(index)
    major, minor = torch.cuda.get_device_capability(index)
    driver = _nvidia_driver() if with_driver else None
    return DeviceInfo(kind="cuda", name=name, slug=slugify(name), compute_capability=f"{major}.{minor}",
                      driver=driver)


@functools.cache
def _cpu_info() -> DeviceInfo:
    name = cpu_model_name()
    return DeviceInfo(kind="cpu", name=name, slug=slugify(name, prefix="cpu-"), compute_capability=None,
                      driver=None)


def detect(device: str | None = None, index: int | None = None, with_driver: bool = False) -> DeviceInfo:
    """The device that runs ``device`` ("cuda", "cpu"; None: CUDA if present, else CPU).

    ``EDA_TUNE_DEVICE_SLUG`` overrides the slug (to share results between card names that a
    user knows to be the same chip); the name and capability stay what the driver says.
    """
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            from eda_tune.errors import BackendUnavailable

            raise BackendUnavailable("no CUDA device is visible to this process")
        info = _cuda_info(torch.cuda.current_device() if index is None else index, with_driver)
    elif kind == "cpu":
        info = _cpu_info()
    else:
        from eda_tune.errors import EdaInputError

        raise EdaInputError(f"device must be 'cuda' or 'cpu' but got {device!r}")
    forced = os.environ.get("EDA_TUNE_DEVICE_SLUG")
    if forced:
        info = DeviceInfo(kind=info.kind, name=info.name, slug=slugify(forced),
                          compute_capability=info.compute_capability, driver=info.driver)
    return info


def software_versions() -> dict[str, str | None]:
    """Versions that change kernel timings: torch (+ CUDA), triton, tilelang, optuna, eda-tune."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"torch": str(torch.__version__),
                                  "cuda": None if torch.version.cuda is None else str(torch.version.cuda)}
    for pkg in ("triton", "tilelang", "optuna"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    from eda_tune import __version__

    out["eda_tune"] = __version__
    return out
