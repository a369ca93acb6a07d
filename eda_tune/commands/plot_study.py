"""``eda-tune plot-study``: a study's optimisation history and parameter importances, drawn from its
Optuna storage with ``optuna.visualization.matplotlib``."""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path
from typing import Any

NAME = "plot-study"
HELP = "draw an Optuna study's optimisation history and parameter importances (PNG)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", required=True,
                   help="Optuna storage URL, e.g. sqlite:///eda-tune.db (or a path to a .db file)")
    p.add_argument("--study", default=None, help="study name (default: every study in the storage)")
    p.add_argument("--out", default="reports/studies", help="folder for <study>-history.png and "
                                                            "<study>-importances.png")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120] or "study"


def plot_study(study: Any, out: Path) -> dict[str, str]:
    """Write the history and importance plots of ``study``; returns {kind: path or why not}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for kind, draw, need in (("history", ovm.plot_optimization_history, 1),
                             ("importances", ovm.plot_param_importances, 2)):
        if len(complete) < need:
            done[kind] = f"skipped: {len(complete)} completed trials (needs {need})"
            continue
        try:
            with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = draw(study)
            fig: Any = ax.figure if hasattr(ax, "figure") else plt.gcf()
            fig.set_size_inches(8, 4.5)
            fig.tight_layout()
            path = out / f"{_safe(study.study_name)}-{kind}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            done[kind] = str(path)
        except Exception as err:  # e.g. importances of a single-valued parameter
            done[kind] = f"failed: {type(err).__name__}: {err}"
    return done


def run(args: argparse.Namespace) -> int:
    import optuna

    from eda_tune.errors import EdaInputError

    storage = args.storage
    if "://" not in storage:
        if not Path(storage).exists():
            raise EdaInputError(f"--storage must be an Optuna storage URL or an existing .db file but got {storage!r}")
        storage = f"sqlite:///{Path(storage).resolve()}"
    names = [args.study] if args.study else optuna.get_all_study_names(storage=storage)
    if not names:
        raise EdaInputError(f"--storage {args.storage} holds no study")
    out = Path(args.out)
    status = 0
    for name in names:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            known = optuna.get_all_study_names(storage=storage)
            raise EdaInputError(f"--study must be one of {known} but got {name!r}") from None
        for kind, what in plot_study(study, out).items():
            print(f"{name} {kind}: {what}")
            if what.startswith("failed"):
                status = 1
    return status
