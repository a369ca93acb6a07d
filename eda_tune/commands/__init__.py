"""Subcommands of the ``eda-tune`` CLI, one module each."""
