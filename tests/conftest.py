"""Test set-up: without a GPU, Triton kernels run in its interpreter (set before triton compiles any)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# never let the tests read a developer's own tuned results, cache or overrides
os.environ.pop("EDA_TUNE_BACKEND", None)
# under pytest-xdist (scripts/test.sh) each worker takes its share of the cores: oversubscribed,
# a CPU timing in the tuner tests was seen 150x slower (2026-12-08)
CORE_SHARE = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(CORE_SHARE)
    # and so do the processes a test starts (the tuner's trial workers): with a thread per core
    # each, a fast config's trial in a loaded fresh-clone run timed 152 ms, as slow as the 150 ms
    # sleep it was meant to beat (tests/test_tuner.py, 2026-12-08)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(CORE_SHARE)
_TMP = tempfile.mkdtemp(prefix="eda-tune-tests-")
os.environ["EDA_TUNE_CACHE"] = os.path.join(_TMP, "cache")
os.environ["EDA_TUNE_RESULTS_DIR"] = os.path.join(_TMP, "results")


@pytest.fixture
def core_share() -> int:
    """The cores this test process may keep busy (all of them outside pytest-xdist)."""
    return CORE_SHARE


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the long tests first: pytest-xdist hands tests out in order, and a long one left to the end
    # keeps one worker busy after the others are done (the lowering walk, 2026-12-08)
    items.sort(key=lambda item: "slow" not in item.keywords)
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
