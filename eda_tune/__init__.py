"""eda-tune: Erase-then-Delta Attention kernels from several compilers, tuned and dispatched."""

from eda_tune.errors import (
    BackendUnavailable,
    ConfigError,
    EdaError,
    EdaInputError,
    EdaTypeError,
    ResultsError,
    SearchSpaceError,
)
from eda_tune.ops import chunk_eda
from eda_tune.problem import Config, Problem, ShapeClass
from eda_tune.reference import naive_recurrent_eda

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable", "Config", "ConfigError", "EdaError", "EdaInputError", "EdaTypeError",
    "Problem", "ResultsError", "SearchSpaceError", "ShapeClass", "chunk_eda", "naive_recurrent_eda",
]
