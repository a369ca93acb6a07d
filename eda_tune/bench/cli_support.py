"""What the check, bench and compare commands share: argument parsing and a progress bar."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eda_tune.errors import EdaInputError
from eda_tune.shapes import NamedShape


def add_selection_arguments(p: Any, shapes_default: str, out_default: str, out_files: str) -> None:
    """The arguments ``check`` and ``bench`` share: which backends, which shapes, where to write."""
    p.add_argument("--backends", default=None,
                   help="comma-separated backends/baselines (default: every available one, and "
                        "fla_gdp, fla_gdr when fla imports)")
    p.add_argument("--shapes", default=None,
                   help=f"shapes YAML file or built-in set name (default: {shapes_default})")
    p.add_argument("--only", default=None, help="comma-separated shape names of the set to run (S1,S3)")
    p.add_argument("--out", default=out_default, help=f"folder for {out_files}")


def parse_names(text: str | None, flag: str = "--backends") -> list[str] | None:
    """``"a,b"`` -> ["a", "b"]; None or "" or "all" -> None (everything)."""
    if text is None or text.strip() in ("", "all"):
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise EdaInputError(f"{flag} must be a comma-separated list of names but got {text!r}")
    return names


def resolve_shapes(path: str | None, device: str, default: str) -> list[NamedShape]:
    """``--shapes FILE``, or the built-in set ``default`` (``check_cpu``, ``standard``, ...)."""
    from eda_tune.shapes import builtin_shapes, load_shapes

    if path is None:
        return builtin_shapes(default, device=device)
    p = Path(path)
    if not p.exists() and "/" not in path and not path.endswith((".yaml", ".yml")):
        return builtin_shapes(path, device=device)  # a built-in set by name: standard, cpu, check_gpu
    return load_shapes(p, device=device)


def select_shapes(shapes: list[NamedShape], only: str | None) -> list[NamedShape]:
    names = parse_names(only, "--only")
    if names is None:
        return shapes
    known = [s.name for s in shapes]
    bad = [n for n in names if n not in known]
    if bad:
        raise EdaInputError(f"--only must name shapes of the set {known} but got {bad}")
    return [s for s in shapes if s.name in names]


@contextlib.contextmanager
def progress_bar(console: Any, total: int, what: str) -> Iterator[Any]:
    """A rich progress bar on a terminal, one plain line per step elsewhere (CI logs); yields
    ``step(description)``, called before each step."""
    if not console.is_terminal:
        count = [0]

        def line(description: str) -> None:
            count[0] += 1
            print(f"[{what} {count[0]}/{total} {time.strftime('%H:%M:%S')}] {description}", flush=True)

        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as prog:
        task = prog.add_task(what, total=total)
        first = [True]

        def step(description: str) -> None:
            if not first[0]:
                prog.advance(task)
            first[0] = False
            prog.update(task, description=description)

        yield step
        prog.update(task, completed=total, description=f"{what}: done")


def make_console() -> Any:
    """A rich console; wide when the output is not a terminal (CI logs), so tables stay readable."""
    from rich.console import Console

    probe = Console()
    return probe if probe.is_terminal else Console(width=220)
