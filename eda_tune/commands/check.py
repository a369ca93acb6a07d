"""``eda-tune check``: every available backend (and fla, when importable) against the float64
recurrence, forward and backward; writes check.json and check.md; exits 1 on any failure."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "check"
HELP = "check every backend against the float64 reference (fwd and bwd); write check.json/check.md"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from eda_tune.bench.cli_support import add_selection_arguments

    add_selection_arguments(p, "check_cpu on CPU, check_gpu on CUDA: the standard shapes at reduced B and H",
                            "reports/check", "check.json and check.md")
    p.add_argument("--fwd-only", action="store_true", help="skip the gradient checks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when present")
    p.add_argument("--merge", nargs="+", metavar="CHECK_JSON", default=None,
                   help="check nothing: join these check.json files (one card, e.g. shapes or backends split "
                        "over several runs; a later file's row wins) into one report in --out")


def run(args: argparse.Namespace) -> int:
    if args.merge:
        from eda_tune.bench.cli_support import make_console
        from eda_tune.bench.report import load_json
        from eda_tune.bench.runner import merge_check

        return _write(merge_check([load_json(p) for p in args.merge]), Path(args.out), make_console())

    from eda_tune.bench.cli_support import (
        make_console,
        parse_names,
        progress_bar,
        resolve_shapes,
        select_shapes,
    )
    from eda_tune.bench.runner import backend_targets, default_device, prepare_device

    device = args.device or default_device()
    prepare_device(device)  # before any backend module defines a kernel

    from eda_tune.bench.report import write_json
    from eda_tune.bench.runner import run_check

    console = make_console()
    default_set = "check_gpu" if device == "cuda" else "check_cpu"
    shapes = select_shapes(resolve_shapes(args.shapes, device, default_set), args.only)
    targets, skipped = backend_targets(parse_names(args.backends))
    notes = []
    if args.shapes is None and device == "cuda":
        notes.append("shapes: the standard shapes at full K, V, dtype and gating with realistic T but "
                     "reduced B and H (the float64 reference and autograd through it cannot run at full size)")
    modes = 1 if args.fwd_only else 2
    out = Path(args.out)

    def keep(partial: dict) -> None:  # a run cut short keeps every row it checked
        write_json(out / "check.json", partial)

    with progress_bar(console, len(targets) * len(shapes) * modes, "check") as step:
        report = run_check(targets, shapes, seed=args.seed, backward=not args.fwd_only, progress=step,
                           skipped=skipped, notes=notes, on_row=keep)
    return _write(report, out, console)


def _write(report: dict, out: Path, console: Any) -> int:
    from eda_tune.bench.report import check_markdown, print_check, write_json

    write_json(out / "check.json", report)
    (out / "check.md").write_text(check_markdown(report))
    print_check(report, console)
    console.print(f"wrote {out / 'check.json'} and {out / 'check.md'}")
    return 0 if report["ok"] else 1
