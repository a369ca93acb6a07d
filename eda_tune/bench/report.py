"""Human and machine reports of check and bench runs: JSON, Markdown and rich tables."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ERROR_COLUMNS = ("o", "final_state", "dq", "dk", "dv", "de", "dg", "dbeta", "dgamma", "dinitial_state")


# ---------------------------------------------------------------------------------------------
# small formatting helpers
# ---------------------------------------------------------------------------------------------

def fmt_err(x: Any) -> str:
    if x is None:
        return "inf/nan"
    return f"{x:.1e}"


def fmt_ms(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.3f}" if x < 100 else f"{x:.1f}"


def fmt_ratio(x: Any) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_config(cfg: Mapping[str, Any] | None) -> str:
    if not cfg:
        return "-"
    return ",".join(f"{k}={v}" for k, v in sorted(cfg.items()))


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def rich_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for h in header:
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*(str(x) for x in r))
    return table


def plain(x: Any) -> Any:
    """JSON-safe copy: NaN and Inf become None (JSON has neither), tuples become lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    return x


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically (a temporary file renamed over the target)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(plain(data), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")
    os.replace(tmp, path)


def load_json(path: str | Path) -> dict[str, Any]:
    from eda_tune.errors import EdaInputError

    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as err:
        raise EdaInputError(f"cannot read {p}: {err}") from None
    except json.JSONDecodeError as err:
        raise EdaInputError(f"{p} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise EdaInputError(f"{p} must hold a JSON object but holds {type(data).__name__}")
    return data


def _env_lines(report: Mapping[str, Any]) -> list[str]:
    env = report.get("env", {})
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    out = [f"- device: {env.get('device')} ({env.get('card')}, slug `{env.get('slug')}`)",
           f"- versions: {versions}", f"- python {env.get('python')}, git {env.get('git')}, "
           f"at {env.get('time_utc')}"]
    for n in report.get("not_run", []):
        out.append(f"- not run: **{n['target']}**: {n['reason']}")
    for note in report.get("notes", []):
        out.append(f"- {note}")
    return out


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------

def check_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    rows = report["rows"]
    cols = [c for c in ERROR_COLUMNS if any(c in r.get("errors", {}) for r in rows)]
    header = ["target", "shape", "mode", "result", *cols, "reason"]
    out = []
    for r in rows:
        errs = r.get("errors", {})
        out.append([r["target"], r["shape"], r["mode"], r["status"].upper(),
                    *(fmt_err(errs[c]) if c in errs else "" for c in cols), r.get("reason", "")])
    return header, out


def check_matrix(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """target x shape: PASS / FAIL / ERROR / skip over both modes."""
    shapes = [s["name"] for s in report["shapes"]]
    targets = [t["label"] for t in report["targets"]]
    cells: dict[tuple[str, str], list[str]] = {}
    modes = sorted({r["mode"] for r in report["rows"]}, key=lambda m: m != "fwd")
    for r in report["rows"]:
        cells.setdefault((r["target"], r["shape"]), []).append(f"{r['mode']}:{r['status']}")
    out = []
    for t in targets:
        line = [t]
        for s in shapes:
            st = [c.split(":")[1] for c in cells.get((t, s), [])]
            if any(x in ("fail", "error") for x in st):
                word = "FAIL" if "fail" in st else "ERROR"
            elif "pass" in st and len(st) < len(modes):
                word = "pass (" + "/".join(m for m in modes if f"{m}:pass" in cells[(t, s)]) + "; rest not run)"
            elif "pass" in st:
                word = "pass" + (" (fwd)" if st.count("pass") < len(st) else "")
            elif not st:
                word = "not run"  # a run cut short (partial report)
            else:
                word = "skip"
            line.append(word)
        out.append(line)
    return ["target", *shapes], out


def check_markdown(report: Mapping[str, Any]) -> str:
    mh, mrows = check_matrix(report)
    h, rows = check_rows(report)
    status = "PASS" if report["ok"] else f"FAIL ({report['failures']} failing rows)"
    if report.get("partial") and report.get("merged_from"):
        status += " so far (merged runs: the cells marked not run were checked by none of them)"
    elif report.get("partial"):
        status += f" so far (cut short after {len(report['rows'])} rows: the rest not run)"
    shape_rows = [[s["name"], s["B"], s["T"], s["H"], s["K"], s["V"], s["dtype"], s["gate"], s["num_seqs"],
                   s["initial_state"], s["final_state"]] for s in report["shapes"]]
    parts = [f"# eda-tune check: {status}", "", *_env_lines(report), "",
             "Relative errors ||out - ref|| / ||ref|| against `naive_recurrent_eda` in float64 "
             "(fwd: o and the final state; bwd: every input gradient). `fla_gdr` computes Gated "
             "DeltaNet and is checked on inputs with gamma = 0.", "",
             "## Summary", "", md_table(mh, mrows), "", "## Shapes", "",
             md_table(["shape", "B", "T", "H", "K", "V", "dtype", "g", "seqs", "h0", "final"], shape_rows), "",
             "## Errors", "", md_table(h, rows), ""]
    tol = {}
    for r in report["rows"]:
        for k, v in r.get("tolerances", {}).items():
            tol[(r["problem"]["dtype"], k)] = v
    if tol:
        parts += ["## Tolerances", "", md_table(["dtype", "output", "tolerance"],
                                                [[d, k, f"{v:.0e}"] for (d, k), v in sorted(tol.items())]), ""]
    return "\n".join(parts)


def print_check(report: Mapping[str, Any], console: Any) -> None:
    h, rows = check_rows(report)
    console.print(rich_table("eda-tune check: relative errors vs the float64 recurrence", h, rows))
    mh, mrows = check_matrix(report)
    console.print(rich_table("summary", mh, mrows))
    for n in report.get("not_run", []):
        console.print(f"[dim]not run: {n['target']}: {n['reason']}[/dim]")
    console.print("[bold green]PASS[/bold green]" if report["ok"]
                  else f"[bold red]FAIL[/bold red]: {report['failures']} failing rows")


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------

def bench_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["shape", "mode", "target", "status", "time ms", "p20-p80", "x floor", "vs fla_gdp",
              "peak MiB", "config", "note"]
    out = []
    for r in report["rows"]:
        spread = (f"{fmt_ms(r.get('p20_ms'))}-{fmt_ms(r.get('p80_ms'))}" if r.get("time_ms") is not None else "")
        mem = r.get("peak_mem_mb")
        out.append([r["shape"], r["mode"], r["target"], r["status"], fmt_ms(r.get("time_ms")), spread,
                    fmt_ratio(r.get("time_over_floor")), fmt_ratio(r.get("speedup_vs_fla_gdp")),
                    "-" if mem is None else f"{mem:.0f}", fmt_config(r.get("config")),
                    (r.get("reason") or "")[:160]])
    return header, out


def floor_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["shape", "mode", "GB moved", "GFLOP", "bytes floor ms", "FLOP floor ms", "floor ms", "bound"]
    out = [[f["shape"], f["mode"], f"{f['bytes'] / 1e9:.3f}", f"{f['flops'] / 1e9:.1f}",
            fmt_ms(f["bytes_floor_ms"]), fmt_ms(f["flops_floor_ms"]), fmt_ms(f["floor_ms"]), f["bound"]]
           for f in report.get("floors", [])]
    return header, out


def bench_markdown(report: Mapping[str, Any], png_name: str | None = "bench.png") -> str:
    c = report.get("ceilings", {})
    h, rows = bench_rows(report)
    fh, frows = floor_rows(report)
    status = "all timings checked" if report["ok"] else f"{report['failures']} rows wrong or failed"
    parts = [f"# eda-tune bench ({status})", "", *_env_lines(report),
             f"- ceilings measured on this device ({c.get('method')}): copy {c.get('copy_gbps', 0):.0f} GB/s "
             f"(read + write), {c.get('matmul_dtype')} matmul {c.get('matmul_tflops', 0):.3g} TFLOP/s "
             f"at {c.get('matmul_shape')}", "",
             "Times are medians (CUDA: `triton.testing.do_bench`, L2 flushed; CPU: wall clock) after a "
             "correctness check against the float64 recurrence (forward at full size, gradients at a "
             "reduced B/H/T). `x floor` is time over the larger floor; `vs fla_gdp` is fla's "
             "gated-delta-product time over this time (above 1: faster than fla). "
             "Only ratios within one run count.", ""]
    if png_name:
        parts += [f"![time per shape and backend]({png_name})", ""]
    parts += ["## Timings", "", md_table(h, rows), "", "## Floors", "", md_table(fh, frows), ""]
    return "\n".join(parts)


def print_bench(report: Mapping[str, Any], console: Any) -> None:
    h, rows = bench_rows(report)
    console.print(rich_table("eda-tune bench", h, rows))
    fh, frows = floor_rows(report)
    console.print(rich_table("floors", fh, frows))
    for n in report.get("not_run", []):
        console.print(f"[dim]not run: {n['target']}: {n['reason']}[/dim]")
