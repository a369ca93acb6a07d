"""Dispatch overhead per call: ``chunk_eda(...)`` against the same backend's kernel called directly.

The difference is what the public op adds: argument validation, the Problem, the dispatcher's
cached lookup and ``.contiguous()``. Goal (issue 5): <= 20 us per call on CPU. Uses a tiny problem
so that the kernel itself is short, and interleaves the two loops to cancel drift.

    python benchmarks/dispatch_overhead.py [--device cpu] [--calls 2000] [--json results/bench/dispatch_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eda_tune import chunk_eda, dispatch  # noqa: E402
from eda_tune.checking import make_inputs  # noqa: E402
from eda_tune.hardware import detect, software_versions  # noqa: E402
from eda_tune.problem import Problem  # noqa: E402


def _noop_backend() -> Any:
    """A backend whose kernel returns a preallocated output: isolates the dispatch cost from the kernel."""
    from eda_tune.backends import Backend, register
    from eda_tune.search.space import SearchSpace

    class Noop(Backend):
        name = "noop_bench"
        priority = 10_000

        def is_available(self) -> tuple[bool, str]:
            return True, ""

        @property
        def search_space(self) -> SearchSpace:  # type: ignore[override]
            return SearchSpace.from_mapping({"backend": "noop_bench", "parameters": {"x": [1]},
                                             "default": {"x": 1}})

        def _build(self, problem: Problem, config: Any) -> Any:
            def run(q, k, v, e, g, beta, gamma, scale, h0, out_final, cu, l2):  # noqa: ANN001
                return v, None
            return run

    return register(Noop(), replace=True)


def measure(calls: int, device: str, backend: str | None, rounds: int = 7) -> dict[str, Any]:
    problem = Problem(B=1, T=16, H=1, K=16, V=16, dtype="float32", device=device)
    inputs = make_inputs(problem, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dispatch.NoTunedResultsWarning)
        chosen, kernel = dispatch.select(problem, backend)
        chunk_eda(**inputs, backend=backend)
    args = (inputs["q"], inputs["k"], inputs["v"], inputs["e"], inputs["g"], inputs["beta"], inputs["gamma"],
            problem.K ** -0.5, None, False, None, False)
    via, direct = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            chunk_eda(**inputs, backend=backend)
        t1 = time.perf_counter()
        for _ in range(calls):
            kernel(*args)
        t2 = time.perf_counter()
        via.append((t1 - t0) / calls * 1e6)
        direct.append((t2 - t1) / calls * 1e6)
    over = [a - b for a, b in zip(via, direct)]
    return {"backend": chosen.name, "chunk_eda_us": statistics.median(via), "direct_us": statistics.median(direct),
            "overhead_us": statistics.median(over), "overhead_min_us": min(over)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    _noop_backend()
    rows: list[dict[str, Any]] = []
    for label, backend, env in (("backend=noop_bench", "noop_bench", None),
                                ("backend=None, $EDA_TUNE_BACKEND", None, "noop_bench"),
                                ("backend=None, real kernel", None, None)):
        if env:
            os.environ["EDA_TUNE_BACKEND"] = env
        else:
            os.environ.pop("EDA_TUNE_BACKEND", None)
        row = measure(args.calls if (backend or env) else max(args.calls // 10, 50), args.device, backend)
        row["dispatch"] = label
        rows.append(row)
        print(f"{row['dispatch']:<34} backend {row['backend']:<14} chunk_eda {row['chunk_eda_us']:8.1f} us  "
              f"direct {row['direct_us']:8.1f} us  overhead {row['overhead_us']:6.1f} us "
              f"(min {row['overhead_min_us']:.1f})")
    goal = 20.0
    worst = max(rows[0]["overhead_us"], rows[1]["overhead_us"])
    print(f"goal: overhead <= {goal} us per call on CPU: "
          f"{'met' if worst <= goal else 'NOT met'} ({worst:.1f} us, no-op kernel)")
    if args.json:
        info = detect(args.device)
        out = {"device": info.to_dict(), "software": software_versions(), "calls": args.calls, "goal_us": goal,
               "goal_met": worst <= goal, "rows": rows}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
