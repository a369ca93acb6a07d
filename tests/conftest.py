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
_TMP = tempfile.mkdtemp(prefix="eda-tune-tests-")
os.environ["EDA_TUNE_CACHE"] = os.path.join(_TMP, "cache")
os.environ["EDA_TUNE_RESULTS_DIR"] = os.path.join(_TMP, "results")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
