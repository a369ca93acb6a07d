"""bench.png: time per shape per target (log scale) and speedup over fla's gated delta product,
one row of panels per mode (fwd, fwd+bwd)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

BASELINE = "fla_gdp"


def _ratio(base: float | None, time_ms: float | None) -> float:
    return base / time_ms if base and time_ms else 0.0


def plot_bench(report: Mapping[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r.get("status") == "ok" and r.get("time_ms")]
    shapes = [s["name"] for s in report["shapes"]]
    targets = [t["label"] for t in report["targets"]]
    modes = [m for m in ("fwd", "fwd_bwd") if any(r["mode"] == m for r in report["rows"])] or ["fwd"]
    times = {(r["target"], r["shape"], r["mode"]): float(r["time_ms"]) for r in rows}
    floors = {(f["shape"], f["mode"]): float(f["floor_ms"]) for f in report.get("floors", [])}

    fig, axes = plt.subplots(len(modes), 2, figsize=(max(8.0, 1.6 * len(shapes) + 4), 3.6 * len(modes)),
                             squeeze=False)
    width = 0.8 / max(len(targets), 1)
    cmap = plt.get_cmap("tab10")
    card = report.get("env", {}).get("card", "")
    for i, mode in enumerate(modes):
        ax_t, ax_s = axes[i]
        for j, t in enumerate(targets):
            xs = [k + (j - (len(targets) - 1) / 2) * width for k in range(len(shapes))]
            ys = [times.get((t, s, mode), 0.0) for s in shapes]
            ax_t.bar(xs, ys, width, label=t, color=cmap(j % 10))
        fl = [floors.get((s, mode)) for s in shapes]
        if any(fl):
            ax_t.scatter(range(len(shapes)), [f or float("nan") for f in fl], marker="_", s=400, color="black",
                         label="floor", zorder=3)
        ax_t.set_xticks(range(len(shapes)), shapes)
        ax_t.set_ylabel("ms (median)")
        if any(times.values()):
            ax_t.set_yscale("log")
        ax_t.set_title(f"time per shape, {mode}")
        ax_t.legend(fontsize=7, ncol=2)

        base = {s: times.get((BASELINE, s, mode)) for s in shapes}
        others = [t for t in targets if t != BASELINE]
        if any(base.values()):
            w = 0.8 / max(len(others), 1)
            seen: list[float] = []
            for j, t in enumerate(others):
                xs = [k + (j - (len(others) - 1) / 2) * w for k in range(len(shapes))]
                ys = [_ratio(base.get(s), times.get((t, s, mode))) for s in shapes]
                seen += [y for y in ys if y > 0]
                ax_s.bar(xs, ys, w, label=t, color=cmap(targets.index(t) % 10))
            if seen and max(seen) / min(seen) > 20:  # a wide spread reads better on a log axis
                ax_s.set_yscale("log")
            ax_s.axhline(1.0, color="black", lw=0.8)
            ax_s.set_xticks(range(len(shapes)), shapes)
            ax_s.set_ylabel(f"{BASELINE} time / time")
            ax_s.set_title(f"speedup over fla gated_delta_product, {mode}")
            ax_s.legend(fontsize=7, ncol=2)
        else:
            ax_s.axis("off")
            ax_s.text(0.5, 0.5, f"no {BASELINE} timings in this run\n(fla not installed, or not on CUDA)",
                      ha="center", va="center", fontsize=10)
    fig.suptitle(f"eda-tune bench {card}".strip(), fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
