"""Comparing two bench runs, or a bench run against a results/<slug>.yaml, row by row.

A row is a (shape, mode, target). It is ``slower`` when new / old > 1 + threshold, ``faster`` when
old / new > 1 + threshold, else ``same``. The comparison fails on any slowdown beyond the threshold,
on any row of the new run whose correctness check failed (``wrong``), and on a row that ran in the
old run but errors in the new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eda_tune.errors import EdaInputError

FAILING = ("slower", "wrong", "broke")


def load_any(path: str | Path) -> tuple[str, Any]:
    """("bench", dict) for a bench JSON, ("results", Results) for a results YAML."""
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        from eda_tune import results as R

        return "results", R.load(p)
    from eda_tune.bench.report import load_json

    data = load_json(p)
    if data.get("kind") != "eda-tune-bench" or not isinstance(data.get("rows"), list):
        raise EdaInputError(f"{p} must be a bench.json written by 'eda-tune bench' (kind eda-tune-bench) "
                            f"but has kind {data.get('kind')!r}")
    return "bench", data


def _verdict(old_ms: float | None, new_ms: float | None, threshold: float) -> tuple[str, float | None]:
    if not old_ms or not new_ms:
        return "n/a", None
    ratio = new_ms / old_ms
    if ratio > 1 + threshold:
        return "slower", ratio
    if 1 / ratio > 1 + threshold:
        return "faster", ratio
    return "same", ratio


def compare_bench(old: Mapping[str, Any], new: Mapping[str, Any], threshold: float = 0.05) -> dict[str, Any]:
    """Row-by-row differences of two bench reports."""
    if not threshold >= 0:
        raise EdaInputError(f"threshold must be >= 0 but got {threshold}")
    key = lambda r: (r["shape"], r["mode"], r["target"])  # noqa: E731
    old_rows = {key(r): r for r in old["rows"]}
    new_rows = {key(r): r for r in new["rows"]}
    rows: list[dict[str, Any]] = []
    for k in list(new_rows) + [k for k in old_rows if k not in new_rows]:
        o, n = old_rows.get(k), new_rows.get(k)
        row: dict[str, Any] = {"shape": k[0], "mode": k[1], "target": k[2],
                               "old_ms": o.get("time_ms") if o else None, "new_ms": n.get("time_ms") if n else None,
                               "old_status": o["status"] if o else None, "new_status": n["status"] if n else None,
                               "ratio": None, "note": ""}
        if n is None:
            row["verdict"], row["note"] = "missing", "not in the new run"
        elif n["status"] == "wrong":
            row["verdict"], row["note"] = "wrong", n.get("reason", "")
        elif n["status"] == "error":
            ran_before = o is not None and o["status"] == "ok"
            row["verdict"] = "broke" if ran_before else "error"
            row["note"] = n.get("reason", "")
        elif o is None:
            row["verdict"], row["note"] = "new", "not in the old run"
        elif o.get("problem") != n.get("problem"):
            row["verdict"], row["note"] = "n/a", "the shape differs between the runs"
        elif n["status"] == "skip" and o["status"] == "skip":
            row["verdict"], row["note"] = "skip", n.get("reason", "")
        elif n["status"] != "ok" or o["status"] != "ok":
            row["verdict"] = "n/a"
            row["note"] = f"old {o['status']}, new {n['status']}: {n.get('reason') or o.get('reason') or ''}"
        else:
            row["verdict"], row["ratio"] = _verdict(o.get("time_ms"), n.get("time_ms"), threshold)
            if o.get("config") != n.get("config"):
                row["note"] = "config changed"
        rows.append(row)
    notes = []
    oc, nc = old.get("env", {}).get("card"), new.get("env", {}).get("card")
    if oc != nc:
        notes.append(f"different devices ({oc} vs {nc}): times compare machines, not code")
    return _summary(rows, threshold, notes, "bench", "bench")


def compare_results(results: Any, new: Mapping[str, Any], threshold: float = 0.05) -> dict[str, Any]:
    """A bench run against a results file: a default row against ``default_time_ms``, a tuned row
    against ``time_ms`` of its backend in the entry of the row's shape class (exact class only)."""
    from eda_tune.problem import Problem, ShapeClass

    rows: list[dict[str, Any]] = []
    for n in new["rows"]:
        if n["variant"] == "baseline":
            continue
        problem = Problem.from_dict(n["problem"])
        cls = ShapeClass.of(problem)
        entry = results.entries.get(cls.key)
        br = entry.backends.get(n["backend"]) if entry is not None else None
        old_ms = None
        if br is not None:
            old_ms = br.time_ms if n["variant"] == "tuned" else br.default_time_ms
        row: dict[str, Any] = {"shape": n["shape"], "mode": n["mode"], "target": n["target"], "old_ms": old_ms,
                               "new_ms": n.get("time_ms"), "old_status": "results" if old_ms else None,
                               "new_status": n["status"], "ratio": None, "note": f"class {cls.key}"}
        if n["status"] == "wrong":
            row["verdict"], row["note"] = "wrong", n.get("reason", "")
        elif n["status"] == "error":
            row["verdict"] = "broke" if old_ms else "error"
            row["note"] = n.get("reason", "")
        elif old_ms is None:
            row["verdict"] = "n/a"
            row["note"] = f"no {'tuned' if n['variant'] == 'tuned' else 'default'} time for class {cls.key}"
        elif n["status"] != "ok":
            row["verdict"], row["note"] = "n/a", n.get("reason", "")
        else:
            row["verdict"], row["ratio"] = _verdict(old_ms, n.get("time_ms"), threshold)
            if n["variant"] == "tuned" and br is not None and br.config != n.get("config"):
                row["note"] += "; config differs from the results file"
        rows.append(row)
    notes = []
    slug = new.get("env", {}).get("slug")
    if slug and results.slug and slug != results.slug:
        notes.append(f"the results file is for {results.slug}, the bench ran on {slug}")
    if not any(r["ratio"] is not None for r in rows):
        notes.append("no row of the bench matched a timed entry of the results file")
    return _summary(rows, threshold, notes, "results", "bench")


def _summary(rows: list[dict[str, Any]], threshold: float, notes: list[str], old_kind: str, new_kind: str
             ) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    failing = [r for r in rows if r["verdict"] in FAILING]
    return {"kind": "eda-tune-compare", "old_kind": old_kind, "new_kind": new_kind, "threshold": threshold,
            "rows": rows, "counts": counts, "notes": notes, "ok": not failing, "failures": len(failing)}


def compare_paths(old: str | Path, new: str | Path, threshold: float = 0.05) -> dict[str, Any]:
    old_kind, old_data = load_any(old)
    new_kind, new_data = load_any(new)
    if new_kind != "bench":
        raise EdaInputError(f"NEW must be a bench.json (the run under test) but {new} is a results file")
    out = (compare_bench(old_data, new_data, threshold) if old_kind == "bench"
           else compare_results(old_data, new_data, threshold))
    out["old"], out["new"] = str(old), str(new)
    return out


def compare_table(report: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    from eda_tune.bench.report import fmt_ms

    header = ["shape", "mode", "target", "old ms", "new ms", "new/old", "verdict", "note"]
    rows = [[r["shape"], r["mode"], r["target"], fmt_ms(r["old_ms"]), fmt_ms(r["new_ms"]),
             "-" if r["ratio"] is None else f"{r['ratio']:.3f}", r["verdict"].upper() if r["verdict"] in FAILING
             else r["verdict"], (r.get("note") or "")[:120]] for r in report["rows"]]
    return header, rows


def compare_markdown(report: Mapping[str, Any]) -> str:
    from eda_tune.bench.report import md_table

    h, rows = compare_table(report)
    status = "OK" if report["ok"] else f"FAIL ({report['failures']} rows)"
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(report["counts"].items()))
    parts = [f"# eda-tune compare: {status}", "", f"- old: `{report.get('old')}` ({report['old_kind']})",
             f"- new: `{report.get('new')}` ({report['new_kind']})",
             f"- threshold: {report['threshold']:.0%} (slower: new/old > 1 + threshold)", f"- {counts}",
             *[f"- note: {n}" for n in report["notes"]], "", md_table(h, rows), ""]
    return "\n".join(parts)
