"""``eda-tune compare OLD NEW``: two bench runs (or a results/<gpu>.yaml against a bench run), row
by row; exit 1 on a slowdown beyond the threshold or any correctness failure."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "compare"
HELP = "compare two bench.json (or results/<gpu>.yaml vs bench.json); exit 1 on slowdown or wrong result"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", help="the reference: a bench.json, or a results/<gpu-slug>.yaml")
    p.add_argument("new", help="the run under test: a bench.json")
    p.add_argument("--threshold", type=float, default=0.05,
                   help="relative slowdown that fails (0.05: new/old above 1.05)")
    p.add_argument("--out", default=None, help="folder for compare.json and compare.md")


def run(args: argparse.Namespace) -> int:
    from eda_tune.bench.cli_support import make_console
    from eda_tune.bench.compare import FAILING, compare_markdown, compare_paths, compare_table
    from eda_tune.bench.report import rich_table, write_json
    from eda_tune.errors import EdaInputError

    if not args.threshold >= 0:
        raise EdaInputError(f"--threshold must be >= 0 but got {args.threshold}")
    report = compare_paths(args.old, args.new, args.threshold)
    console = make_console()
    h, rows = compare_table(report)
    console.print(rich_table(f"eda-tune compare (threshold {args.threshold:.0%})", h, rows))
    for n in report["notes"]:
        console.print(f"[yellow]note: {n}[/yellow]")
    if args.out:
        out = Path(args.out)
        write_json(out / "compare.json", report)
        (out / "compare.md").write_text(compare_markdown(report))
        console.print(f"wrote {out / 'compare.json'} and {out / 'compare.md'}")
    if report["ok"]:
        console.print("[bold green]OK[/bold green]: no slowdown beyond the threshold, no wrong result")
        return 0
    bad = ", ".join(f"{k}: {v}" for k, v in report["counts"].items() if k in FAILING)
    console.print(f"[bold red]FAIL[/bold red]: {bad}")
    return 1
