"""One exception hierarchy for the library; bad user input is also a ValueError/TypeError."""

from __future__ import annotations


class EdaError(Exception):
    """Base class of every error eda-tune raises on purpose."""


class EdaInputError(EdaError, ValueError):
    """A value the caller passed is wrong: names the argument, what was expected and what came."""


class EdaTypeError(EdaError, TypeError):
    """An argument of the wrong type (e.g. a dtype that is not supported)."""


class ConfigError(EdaInputError):
    """A config names an unknown tunable, or a value outside its search space or constraints."""


class SearchSpaceError(EdaError, ValueError):
    """A search-space YAML file is malformed: says the file, the parameter and what is allowed."""


class BackendUnavailable(EdaError, RuntimeError):
    """A backend cannot run here (missing package, no GPU) or does not support a problem."""


class ResultsError(EdaError, ValueError):
    """A results YAML file is malformed or of an unknown schema version."""
