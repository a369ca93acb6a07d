"""``eda-tune show [FILE]``: print a results file (default: this device's merged results)."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "show"
HELP = "print tuned results (a results YAML, or this device's results from every results folder)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default=None, metavar="FILE",
                   help="results YAML (default: <device-slug>.yaml of this machine, shipped + user folder)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="whose results to show when no FILE is given (default: cuda if present, else cpu)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from eda_tune import results as results_mod
    from eda_tune.errors import ResultsError

    if args.file:
        res = results_mod.load(args.file)
    else:
        from eda_tune.hardware import detect

        slug = detect(args.device).slug
        found = results_mod.find(slug)
        if found is None:
            dirs = [str(d) for d in results_mod.results_dirs()]
            raise ResultsError(f"no results for this device ({slug}.yaml) in {dirs}; run `eda-tune tune`, "
                               f"or name a FILE")
        res = found
    if args.format == "json":
        print(json.dumps(res.to_dict(), indent=2))
        return 0
    dev = res.device
    table = Table(title=f"{res.source}: {dev.get('name', '?')} ({dev.get('slug')}, "
                        f"sm {dev.get('compute_capability') or '-'}, driver {dev.get('driver') or '-'})")
    for col in ("shape class", "shape", "backend", "tuned ms", "default ms", "speedup", "trials", "failed",
                "config"):
        table.add_column(col)
    for key in sorted(res.entries):
        entry = res.entries[key]
        for i, name in enumerate(sorted(entry.backends, key=lambda n: (n != entry.winner, n))):
            r = entry.backends[name]
            speed = f"{r.default_time_ms / r.time_ms:.2f}x" if r.time_ms and r.default_time_ms else "-"
            cfg = ", ".join(f"{k}={v}" for k, v in (r.config or {}).items()) or str(r.extra.get("reason", "-"))
            table.add_row(key if i == 0 else "", (entry.shape or "") if i == 0 else "",
                          f"{name}{' *' if name == entry.winner else ''}",
                          "-" if r.time_ms is None else f"{r.time_ms:.4g}",
                          "-" if r.default_time_ms is None else f"{r.default_time_ms:.4g}", speed,
                          str(r.trials), str(r.failed), cfg[:90])
    sw = ", ".join(f"{k} {v}" for k, v in res.software.items() if v)
    Console(file=sys.stdout, width=220).print(table)
    print(f"software: {sw}  (* = winner)")
    return 0
