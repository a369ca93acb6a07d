"""``eda-tune backends``: every registered backend, available or not, and why."""

from __future__ import annotations

import argparse
import json
from typing import Any

NAME = "backends"
HELP = "list backends, whether they are available here, and why not"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from eda_tune.backends import all_backends, broken_backends

    rows: list[dict[str, Any]] = []
    for b in all_backends():
        ok, why = b.is_available()
        rows.append({"name": b.name, "available": ok, "reason": why, "backward": b.supports_backward,
                     "priority": b.priority})
    for name, err in broken_backends().items():
        rows.append({"name": name, "available": False, "reason": f"failed to import: {err}",
                     "backward": None, "priority": None})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="eda-tune backends")
    for col in ("backend", "available", "backward", "why not"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "yes" if r["available"] else "no",
                      "-" if r["backward"] is None else ("yes" if r["backward"] else "no"), r["reason"])
    Console().print(table)
    return 0
