"""``eda-tune bench``: time backends (default and tuned configs) and fla baselines, each checked
first, forward and forward+backward, with peak memory and floors; writes bench.json, bench.md and
bench.png. A failure of one target at one shape is recorded in its row, not fatal."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "bench"
HELP = "time backends and fla baselines on the standard shapes; write bench.json/bench.md/bench.png"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from eda_tune.bench.cli_support import add_selection_arguments

    add_selection_arguments(p, "standard on CUDA, cpu on CPU", "reports/bench", "bench.json, bench.md and bench.png")
    p.add_argument("--fwd-only", action="store_true", help="time the forward only")
    p.add_argument("--no-tuned", action="store_true",
                   help="skip the tuned configs (default: timed when results/<gpu>.yaml exists)")
    p.add_argument("--no-ceilings", action="store_true",
                   help="do not measure copy bandwidth and matmul rate (floors from nominal H100 figures)")
    p.add_argument("--warmup-ms", type=float, default=25.0)
    p.add_argument("--rep-ms", type=float, default=100.0)
    p.add_argument("--check-max-t", type=int, default=1024,
                   help="longest sequence the gradients are checked at before timing fwd+bwd")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict", action="store_true", help="exit 1 when a row is wrong or errors")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when present")
    p.add_argument("--merge", nargs="+", metavar="BENCH_JSON", default=None,
                   help="time nothing: join these bench.json files (one card, e.g. shapes split over several "
                        "runs) into one report in --out")


def _has_results(device: str) -> bool:
    try:
        from eda_tune import hardware
        from eda_tune import results as R

        return R.find(hardware.detect(device).slug) is not None
    except Exception:
        return False


def run(args: argparse.Namespace) -> int:
    from eda_tune.bench.cli_support import (
        make_console,
        parse_names,
        progress_bar,
        resolve_shapes,
        select_shapes,
    )
    from eda_tune.bench.report import load_json
    from eda_tune.bench.runner import (
        BenchOptions,
        backend_targets,
        default_device,
        merge_bench,
        prepare_device,
        run_bench,
    )

    console = make_console()
    out = Path(args.out)
    if args.merge:
        return _write(merge_bench([load_json(p) for p in args.merge]), out, console, args.strict)
    device = args.device or default_device()
    prepare_device(device)
    shapes = select_shapes(resolve_shapes(args.shapes, device, "standard" if device == "cuda" else "cpu"),
                           args.only)
    with_tuned = not args.no_tuned and _has_results(device)
    targets, skipped = backend_targets(parse_names(args.backends), with_tuned=with_tuned)
    notes = [] if with_tuned or args.no_tuned else ["tuned configs: no results file for this device, "
                                                    "so only default configs were timed"]
    opts = BenchOptions(fwd_only=args.fwd_only, seed=args.seed, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms,
                        measure_ceilings=not args.no_ceilings, check_max_t=args.check_max_t, extra_notes=notes)
    modes = 1 if args.fwd_only else 2
    from eda_tune.bench.report import write_json

    def keep(partial: dict) -> None:  # a run cut short keeps every row it measured
        write_json(out / "bench.json", partial)

    with progress_bar(console, 1 + len(targets) * len(shapes) * modes, "bench") as step:
        report = run_bench(targets, shapes, opts, progress=step, skipped=skipped, on_row=keep)
    return _write(report, out, console, args.strict)


def _write(report: dict, out: Path, console: Any, strict: bool) -> int:
    from eda_tune.bench.plot import plot_bench
    from eda_tune.bench.report import bench_markdown, print_bench, write_json

    write_json(out / "bench.json", report)
    png = None
    try:
        png = plot_bench(report, out / "bench.png")
    except Exception as err:  # a plot must not lose the measurements
        console.print(f"[yellow]could not draw bench.png: {type(err).__name__}: {err}[/yellow]")
    (out / "bench.md").write_text(bench_markdown(report, png.name if png else None))
    print_bench(report, console)
    console.print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}" + (f" and {png}" if png else ""))
    if not report["ok"]:
        console.print(f"[yellow]{report['failures']} rows wrong or failed (see the table)[/yellow]")
        return 1 if strict else 0
    return 0
