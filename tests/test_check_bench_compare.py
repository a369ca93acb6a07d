"""``eda-tune check``, ``bench``, ``compare`` and ``plot-study`` on CPU at tiny shapes: the reports
parse, the plot is a valid PNG, a wrong backend fails the check, and compare catches an injected
slowdown and an injected wrong result. The fla adapters are checked against a float64 delta
product written here (fla itself needs CUDA); on a GPU, against fla itself."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from eda_tune.backends import register, unregister
from eda_tune.backends.base import Backend, EdaKernel
from eda_tune.bench.baselines import FLA_GDP, FLA_GDR, FlaBaseline, interleave
from eda_tune.bench.compare import compare_bench, compare_results
from eda_tune.bench.floors import Ceilings, bytes_moved, chunk_flops, floors
from eda_tune.bench.runner import References, Target, check_problem, check_target, grad_check_problem
from eda_tune.checking import run_and_check
from eda_tune.cli import main
from eda_tune.problem import Config, Problem

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TINY = """
shapes:
  - {name: t1, B: 1, T: 19, H: 2, K: 16, V: 8, dtype: float32, gate: true, initial_state: true, final_state: true}
  - {name: t2, B: 1, T: 24, H: 1, K: 16, V: 16, dtype: float32, gate: false, num_seqs: 2, final_state: true}
"""


@pytest.fixture()
def tiny_shapes(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return str(path)


class WrongBackend(Backend):
    """The torch backend's kernel with its output nudged by 1%: every check must catch it."""

    name = "wrong_for_tests"
    priority = 1000

    def is_available(self) -> tuple[bool, str]:
        return True, ""

    def resolve_config(self, problem: Problem, config: Any) -> Config:
        return Config()

    def _build(self, problem: Problem, config: Config) -> EdaKernel:
        from eda_tune.backends import get_backend

        inner = get_backend("torch").build(problem)

        def run(**kw: Any) -> Any:
            o, final = inner(**kw)
            return o * 1.01, final
        return run  # type: ignore[return-value]


@pytest.fixture()
def wrong_backend():
    b = register(WrongBackend(), replace=True)
    try:
        yield b
    finally:
        unregister(b.name)


def _die_on_third_call(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the third call of eda_tune.bench.runner.<name> raise KeyboardInterrupt: what a SIGINT
    or a time limit looks like from inside a run."""
    import eda_tune.bench.runner as runner

    real = getattr(runner, name)
    calls = {"n": 0}

    def dies_on_third(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, name, dies_on_third)


def _bench(args: list[str]) -> int:
    return main(["bench", "--warmup-ms", "1", "--rep-ms", "5", "--no-ceilings", *args])


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------

def test_check_passes_and_writes_reports(tmp_path: Path, tiny_shapes: str) -> None:
    out = tmp_path / "check"
    assert main(["check", "--backends", "torch", "--shapes", tiny_shapes, "--out", str(out)]) == 0
    report = json.loads((out / "check.json").read_text())
    assert report["ok"] and report["failures"] == 0
    assert report["env"]["versions"]["torch"] == torch.__version__
    rows = {(r["shape"], r["mode"]): r for r in report["rows"]}
    assert set(rows) == {("t1", "fwd"), ("t1", "bwd"), ("t2", "fwd"), ("t2", "bwd")}
    assert all(r["status"] == "pass" for r in rows.values())
    assert {"o", "final_state"} <= set(rows[("t1", "fwd")]["errors"])
    assert {"o", "dq", "dk", "dv", "de", "dg", "dbeta", "dgamma", "dinitial_state"} <= set(
        rows[("t1", "bwd")]["errors"])
    md = (out / "check.md").read_text()
    assert md.startswith("# eda-tune check: PASS") and "| torch |" in md


def test_check_fails_on_a_wrong_backend(tmp_path: Path, tiny_shapes: str, wrong_backend: Backend) -> None:
    out = tmp_path / "check"
    rc = main(["check", "--backends", f"torch,{wrong_backend.name}", "--shapes", tiny_shapes, "--out", str(out),
               "--fwd-only"])
    assert rc == 1
    report = json.loads((out / "check.json").read_text())
    bad = [r for r in report["rows"] if r["status"] == "fail"]
    assert bad and all(r["target"] == wrong_backend.name for r in bad)
    assert "o: rel error" in bad[0]["reason"]
    assert all(r["status"] == "pass" for r in report["rows"] if r["target"] == "torch")
    assert "FAIL" in (out / "check.md").read_text().splitlines()[0]


def test_check_cut_short_keeps_the_rows_it_checked(tmp_path: Path, tiny_shapes: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A check killed mid-way (a time limit) still leaves check.json with every finished row."""
    _die_on_third_call(monkeypatch, "check_target")
    out = tmp_path / "check"
    assert main(["check", "--backends", "torch", "--shapes", tiny_shapes, "--out", str(out)]) == 130
    report = json.loads((out / "check.json").read_text())
    assert report["partial"] is True and report["ok"]
    assert [(r["shape"], r["mode"], r["status"]) for r in report["rows"]] == [("t1", "fwd", "pass"),
                                                                              ("t1", "bwd", "pass")]
    from eda_tune.bench.report import check_markdown

    md = check_markdown(report)
    assert md.startswith("# eda-tune check: PASS so far (cut short after 2 rows") and "not run" in md


def test_check_unknown_backend_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["check", "--backends", "no_such_backend", "--out", str(tmp_path)]) == 2


def test_check_torch_compile_once(tmp_path: Path) -> None:
    """One tiny torch.compile run through the command (compiling dominates the time)."""
    shapes = tmp_path / "one.yaml"
    shapes.write_text("shapes:\n  - {name: one, B: 1, T: 16, H: 1, K: 16, V: 16, dtype: float32, final_state: true}\n")
    out = tmp_path / "check"
    assert main(["check", "--backends", "torch_compile", "--shapes", str(shapes), "--out", str(out),
                 "--fwd-only"]) == 0
    report = json.loads((out / "check.json").read_text())
    assert [r["status"] for r in report["rows"]] == ["pass"]


def test_check_problem_reduces_only_b_h_t() -> None:
    p = Problem(B=8, T=4096, H=16, K=128, V=64, dtype="bfloat16", training=True)
    small = check_problem(p)
    assert (small.B, small.T, small.H, small.K, small.V, small.dtype, small.training) == (
        1, 1024, 2, 128, 64, "bfloat16", True)
    v = check_problem(Problem(B=1, T=65536, H=16, K=128, V=128, num_seqs=16))
    assert v.varlen and v.num_seqs == 4 and v.T == 2048 and v.H == 2
    assert grad_check_problem(p) == small  # the full S1 cannot go through autograd of the reference
    tiny = Problem(B=2, T=37, H=2, K=16, V=32, training=True, device="cpu")
    assert grad_check_problem(tiny) == tiny


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------

def test_bench_writes_json_md_and_png(tmp_path: Path, tiny_shapes: str) -> None:
    out = tmp_path / "bench"
    assert _bench(["--backends", "torch", "--shapes", tiny_shapes, "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["ok"]
    assert report["env"]["card"] and "torch" in report["env"]["versions"]
    rows = report["rows"]
    assert {(r["shape"], r["mode"]) for r in rows} == {("t1", "fwd"), ("t1", "fwd_bwd"), ("t2", "fwd"),
                                                       ("t2", "fwd_bwd")}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["time_ms"] > 0 and r["p20_ms"] <= r["p80_ms"] + 1e-9 or r["method"] == "wall-clock"
        assert r["config"] == {"chunk_size": r["config"]["chunk_size"], "solver": r["config"]["solver"]}
        assert r["check"]["fwd"]["status"] == "pass"
        assert r["floor_ms"] > 0 and r["time_over_floor"] > 0
    assert all("bwd" in r["check"] for r in rows if r["mode"] == "fwd_bwd")
    assert {f["mode"] for f in report["floors"]} == {"fwd", "fwd_bwd"}
    md = (out / "bench.md").read_text()
    assert md.startswith("# eda-tune bench") and "## Timings" in md and "bench.png" in md
    png = (out / "bench.png").read_bytes()
    assert png[:8] == PNG_MAGIC
    import matplotlib.image as mpimg

    img = mpimg.imread(out / "bench.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_bench_cut_short_keeps_the_rows_it_measured(tmp_path: Path, tiny_shapes: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed mid-way (a time limit) still leaves bench.json with every finished row."""
    _die_on_third_call(monkeypatch, "bench_target")
    out = tmp_path / "bench"
    assert _bench(["--backends", "torch", "--shapes", tiny_shapes, "--out", str(out)]) == 130
    report = json.loads((out / "bench.json").read_text())
    assert report["partial"] is True
    assert [(r["shape"], r["mode"]) for r in report["rows"]] == [("t1", "fwd"), ("t1", "fwd_bwd")]
    assert all(r["status"] == "ok" and r["time_ms"] > 0 for r in report["rows"])


def test_bench_merge_joins_split_runs(tmp_path: Path, tiny_shapes: str) -> None:
    for only in ("t1", "t2"):
        assert _bench(["--backends", "torch", "--shapes", tiny_shapes, "--out", str(tmp_path / only), "--fwd-only",
                       "--only", only]) == 0
    out = tmp_path / "all"
    assert main(["bench", "--merge", str(tmp_path / "t1" / "bench.json"), str(tmp_path / "t2" / "bench.json"),
                 "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert sorted(r["shape"] for r in report["rows"]) == ["t1", "t2"]
    assert [s["name"] for s in report["shapes"]] == ["t1", "t2"] and report["ok"]
    assert (out / "bench.png").read_bytes()[:8] == PNG_MAGIC and (out / "bench.md").exists()


def test_check_merge_joins_split_runs_and_marks_what_none_ran(tmp_path: Path, tiny_shapes: str,
                                                               wrong_backend: Backend) -> None:
    # run 1: torch at t1 only; run 2: torch and the wrong backend at t2 (its failure must survive)
    assert main(["check", "--backends", "torch", "--shapes", tiny_shapes, "--only", "t1", "--fwd-only",
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["check", "--backends", f"torch,{wrong_backend.name}", "--shapes", tiny_shapes, "--only", "t2",
                 "--fwd-only", "--out", str(tmp_path / "b")]) == 1
    out = tmp_path / "m"
    files = [str(tmp_path / d / "check.json") for d in ("a", "b")]
    assert main(["check", "--merge", *files, "--out", str(out)]) == 1  # the wrong row still fails it
    report = json.loads((out / "check.json").read_text())
    got = {(r["target"], r["shape"]): r["status"] for r in report["rows"]}
    assert got == {("torch", "t1"): "pass", ("torch", "t2"): "pass", (wrong_backend.name, "t2"): "fail"}
    assert report["partial"] is True and report["failures"] == 1  # wrong backend never ran at t1
    md = (out / "check.md").read_text()
    assert "not run" in md and "merged from 2 runs" in md
    # a later run's row wins: torch alone at t1 and t2 makes the merge of torch complete
    assert main(["check", "--backends", "torch", "--shapes", tiny_shapes, "--fwd-only",
                 "--out", str(tmp_path / "c")]) == 0
    assert main(["check", "--merge", files[0], str(tmp_path / "c" / "check.json"), "--out", str(out)]) == 0
    report = json.loads((out / "check.json").read_text())
    assert "partial" not in report and report["ok"] and len(report["rows"]) == 2
    bench_dir = tmp_path / "bench"  # a bench report is not a check report: a clear usage error
    assert _bench(["--backends", "torch", "--shapes", tiny_shapes, "--only", "t1", "--fwd-only",
                   "--out", str(bench_dir)]) == 0
    assert main(["check", "--merge", str(bench_dir / "bench.json"), "--out", str(out)]) == 2


def test_bench_records_a_wrong_backend_without_stopping(tmp_path: Path, tiny_shapes: str,
                                                       wrong_backend: Backend) -> None:
    out = tmp_path / "bench"
    args = ["--backends", f"{wrong_backend.name},torch", "--shapes", tiny_shapes, "--out", str(out), "--fwd-only"]
    assert _bench(args) == 0
    report = json.loads((out / "bench.json").read_text())
    by = {(r["target"], r["shape"]): r for r in report["rows"]}
    assert by[(wrong_backend.name, "t1")]["status"] == "wrong"
    assert "time_ms" not in by[(wrong_backend.name, "t1")]  # never timed
    assert by[("torch", "t1")]["status"] == "ok" and by[("torch", "t2")]["status"] == "ok"
    assert not report["ok"]
    assert _bench([*args, "--strict"]) == 1


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------

def _fake_bench(times: dict[tuple[str, str, str], float]) -> dict[str, Any]:
    rows = []
    for (shape, mode, target), t in times.items():
        rows.append({"shape": shape, "mode": mode, "target": target, "backend": target.split("[")[0],
                     "variant": "tuned" if "[tuned]" in target else "default", "status": "ok",
                     "time_ms": t, "config": {"chunk_size": 64},
                     "problem": Problem(B=8, T=4096, H=16, K=128, V=128,
                                        training=(mode == "fwd_bwd")).to_dict()})
    return {"kind": "eda-tune-bench", "env": {"card": "X", "slug": "x"}, "rows": rows}


BASE = {("S1", "fwd", "torch"): 10.0, ("S1", "fwd_bwd", "torch"): 30.0, ("S1", "fwd", "fla_gdp"): 2.0}


def test_compare_same_and_within_threshold_pass() -> None:
    old = _fake_bench(BASE)
    assert compare_bench(old, copy.deepcopy(old))["ok"]
    new = _fake_bench({k: v * 1.04 for k, v in BASE.items()})
    rep = compare_bench(old, new, threshold=0.05)
    assert rep["ok"] and rep["counts"] == {"same": 3}
    faster = _fake_bench({k: v * 0.5 for k, v in BASE.items()})
    assert compare_bench(old, faster)["counts"] == {"faster": 3}


def test_compare_catches_a_slowdown_and_a_wrong_result(tmp_path: Path) -> None:
    old = _fake_bench(BASE)
    slow = copy.deepcopy(old)
    slow["rows"][1]["time_ms"] *= 1.2
    rep = compare_bench(old, slow, threshold=0.05)
    assert not rep["ok"] and rep["counts"]["slower"] == 1
    assert compare_bench(old, slow, threshold=0.25)["ok"]
    wrong = copy.deepcopy(old)
    wrong["rows"][0]["status"] = "wrong"
    wrong["rows"][0]["reason"] = "o: rel error 0.5 > 0.02"
    rep = compare_bench(old, wrong)
    assert not rep["ok"] and rep["counts"]["wrong"] == 1
    broke = copy.deepcopy(old)
    broke["rows"][2]["status"] = "error"
    assert compare_bench(old, broke)["counts"]["broke"] == 1
    # through the command: exit codes and report files
    paths = {}
    for name, data in (("old", old), ("slow", slow), ("wrong", wrong)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    assert main(["compare", str(paths["old"]), str(paths["old"])]) == 0
    assert main(["compare", str(paths["old"]), str(paths["slow"]), "--out", str(tmp_path / "c")]) == 1
    assert json.loads((tmp_path / "c" / "compare.json").read_text())["counts"]["slower"] == 1
    assert (tmp_path / "c" / "compare.md").read_text().startswith("# eda-tune compare: FAIL")
    assert main(["compare", str(paths["old"]), str(paths["wrong"])]) == 1
    assert main(["compare", str(paths["old"]), str(paths["slow"]), "--threshold", "0.5"]) == 0


def test_compare_real_bench_runs(tmp_path: Path, tiny_shapes: str) -> None:
    out = tmp_path / "b"
    assert _bench(["--backends", "torch", "--shapes", tiny_shapes, "--out", str(out), "--fwd-only",
                   "--only", "t1"]) == 0
    path = out / "bench.json"
    assert main(["compare", str(path), str(path)]) == 0
    data = json.loads(path.read_text())
    data["rows"][0]["time_ms"] *= 2
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(data))
    assert main(["compare", str(path), str(slow)]) == 1


def test_compare_bench_against_results_yaml(tmp_path: Path) -> None:
    from eda_tune import results as R
    from eda_tune.problem import ShapeClass

    res = R.new_results({"name": "X", "slug": "x"})
    p = Problem(B=8, T=4096, H=16, K=128, V=128)
    res.set_backend(ShapeClass.of(p), "torch", R.BackendResult(config={"chunk_size": 64}, time_ms=8.0,
                                                                default_time_ms=10.0), problem=p, shape="S1")
    ypath = tmp_path / "x.yaml"
    R.write(ypath, res, merge_existing=False)
    bench = _fake_bench({("S1", "fwd", "torch"): 10.2, ("S1", "fwd", "torch[tuned]"): 8.1})
    rep = compare_results(R.load(ypath), bench)
    assert rep["ok"] and rep["counts"] == {"same": 2}
    slow = _fake_bench({("S1", "fwd", "torch"): 10.2, ("S1", "fwd", "torch[tuned]"): 9.5})
    rep = compare_results(R.load(ypath), slow)
    assert not rep["ok"] and rep["counts"]["slower"] == 1
    bpath = tmp_path / "slow.json"
    bpath.write_text(json.dumps(slow))
    assert main(["compare", str(ypath), str(bpath)]) == 1
    assert main(["compare", str(bpath), str(ypath)]) == 2  # NEW must be a bench run


# ---------------------------------------------------------------------------------------------
# floors
# ---------------------------------------------------------------------------------------------

def test_floors() -> None:
    p = Problem(B=8, T=4096, H=16, K=128, V=128, dtype="bfloat16")
    assert bytes_moved(p) == 5 * 8 * 4096 * 16 * 128 * 2
    assert bytes_moved(p, backward=True) > 2 * bytes_moved(p)
    assert chunk_flops(p, backward=True) == pytest.approx(3 * chunk_flops(p))
    assert chunk_flops(p.replace(T=8192)) == pytest.approx(2 * chunk_flops(p))
    c = Ceilings("cuda", copy_gbps=3000.0, matmul_tflops=700.0, matmul_dtype="bfloat16", copy_bytes=1,
                 matmul_shape=(1, 1, 1), method="test")
    f = floors(p, c)
    assert f["floor_ms"] == max(f["bytes_floor_ms"], f["flops_floor_ms"])
    assert f["bytes_floor_ms"] == pytest.approx(5 * 8 * 4096 * 16 * 128 * 2 / 3e12 * 1e3)
    slow_mem = Ceilings("cuda", 30.0, 700.0, "bfloat16", 1, (1, 1, 1), "test")
    assert floors(p, slow_mem)["bound"] == "memory"


# ---------------------------------------------------------------------------------------------
# fla adapters: their argument plumbing against a float64 gated delta product written here
# ---------------------------------------------------------------------------------------------

def _naive_gdp(q, k, v, g, beta, num_householder, scale, initial_state=None, output_final_state=False,
               use_qk_l2norm_in_kernel=False, cu_seqlens=None):
    """fla's chunk_gated_delta_product semantics (fla/ops/gated_delta_product/naive.py): q at T;
    k, v, beta at n * T; g at T applied before a token's n Householder steps."""
    assert num_householder == 2 and not use_qk_l2norm_in_kernel
    B, T, H, K = q.shape
    bounds = cu_seqlens.tolist() if cu_seqlens is not None else None
    out_dtype, state_dtype = v.dtype, (torch.float64 if v.dtype == torch.float64 else torch.float32)
    q, k, v, beta = (x.double() for x in (q, k, v, beta))
    N = len(bounds) - 1 if bounds else B
    S0 = initial_state.double() if initial_state is not None else q.new_zeros(N, H, K, v.shape[-1])
    o = q.new_zeros(B, T, H, v.shape[-1])
    finals = []
    for n in range(N):
        b, (lo, hi) = (0, (bounds[n], bounds[n + 1])) if bounds else (n, (0, T))
        S = S0[n]
        for t in range(lo, hi):
            if g is not None:
                S = S * g[b, t].double().exp()[:, None, None]
            for j in range(2):
                kk, vv, bb = k[b, 2 * t + j], v[b, 2 * t + j], beta[b, 2 * t + j]
                S = S + bb[:, None, None] * kk[:, :, None] * (vv - torch.einsum("hk,hkv->hv", kk, S))[:, None]
            o[b, t] = torch.einsum("hk,hkv->hv", q[b, t] * scale, S)
        finals.append(S)
    return o.to(out_dtype), (torch.stack(finals).to(state_dtype) if output_final_state else None)


def _naive_gdr(q, k, v, g, beta, scale, initial_state=None, output_final_state=False,
               use_qk_l2norm_in_kernel=False, cu_seqlens=None):
    B, T, H, K = q.shape
    two = lambda x: interleave(torch.zeros_like(x), x)  # noqa: E731
    return _naive_gdp(q, two(k), two(v), g, two(beta), 2, scale, initial_state, output_final_state,
                      use_qk_l2norm_in_kernel, cu_seqlens)


@pytest.mark.parametrize("case", ["gate_state", "nogate", "varlen"])
def test_fla_gdp_adapter_computes_eda(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = {"gate_state": Problem(B=2, T=9, H=2, K=8, V=4, dtype="float64", initial_state=True, final_state=True,
                               device="cpu"),
         "nogate": Problem(B=1, T=7, H=1, K=8, V=8, dtype="float64", gate=False, device="cpu"),
         "varlen": Problem(B=1, T=11, H=2, K=4, V=4, dtype="float64", num_seqs=3, initial_state=True,
                           final_state=True, device="cpu")}[case]
    monkeypatch.setattr(FlaBaseline, "_op", lambda self: _naive_gdp)
    res = run_and_check(FLA_GDP.build(p), p, grads=False)
    assert res.ok, res.reason
    assert res.errors["o"] < 1e-12


def test_fla_gdr_adapter_is_checked_with_gamma_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FlaBaseline, "_op", lambda self: _naive_gdr)
    monkeypatch.setattr(FlaBaseline, "is_available", lambda self: (True, ""))
    monkeypatch.setattr(FlaBaseline, "supports", lambda self, problem: (True, ""))
    target = Target(label="fla_gdr", name="fla_gdr", variant="baseline", supports_backward=True,
                    gamma_zero=True, baseline=FLA_GDR)
    p = Problem(B=1, T=10, H=2, K=8, V=8, dtype="float32", final_state=True, device="cpu")
    row = check_target(target, p, References())
    assert row["status"] == "pass", row
    row = check_target(target, p.replace(training=True), References())
    assert row["status"] == "pass", row
    assert "dgamma" not in row["errors"] and "de" not in row["errors"] and "dbeta" in row["errors"]


def test_fla_baselines_say_why_not_on_cpu() -> None:
    p = Problem(B=1, T=8, H=1, K=16, V=16, dtype="bfloat16", device="cpu")
    for b in (FLA_GDP, FLA_GDR):
        ok, why = b.supports(p)
        assert not ok and "CUDA" in why


def test_interleave() -> None:
    a, b = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    x = interleave(a, b)
    assert x.shape == (1, 6, 2) and x[0, :, 0].tolist() == [0, 1, 0, 1, 0, 1]


# ---------------------------------------------------------------------------------------------
# plot-study
# ---------------------------------------------------------------------------------------------

def test_plot_study(tmp_path: Path) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="torch/K16", storage=url, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_int("BT", 16, 64) - 40) ** 2 + t.suggest_float("w", 0, 1), n_trials=8)
    out = tmp_path / "plots"
    assert main(["plot-study", "--storage", url, "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["torch_K16-history.png", "torch_K16-importances.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)
    assert main(["plot-study", "--storage", url, "--study", "nope", "--out", str(out)]) == 2


# ---------------------------------------------------------------------------------------------
# GPU: the fla baselines themselves (skipped without CUDA or fla)
# ---------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("baseline", ["fla_gdp", "fla_gdr"])
def test_fla_baselines_on_gpu(baseline: str) -> None:
    bl = {"fla_gdp": FLA_GDP, "fla_gdr": FLA_GDR}[baseline]
    ok, why = bl.is_available()
    if not ok:
        pytest.skip(why)
    target = Target(label=baseline, name=baseline, variant="baseline", supports_backward=True,
                    gamma_zero=bl.gamma_zero, baseline=bl)
    for p in (Problem(B=2, T=300, H=2, K=64, V=64, dtype="bfloat16", final_state=True, initial_state=True),
              Problem(B=1, T=500, H=2, K=128, V=128, dtype="bfloat16", num_seqs=3, final_state=True)):
        for training in (False, True):
            row = check_target(target, p.replace(training=training), References())
            assert row["status"] == "pass", row


def test_profile_kernels_splits_a_training_step() -> None:
    """benchmarks/profile_kernels.py (run on the GPU machine) on CPU: rows per op, shares summing to 1."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "profile_kernels", Path(__file__).parents[1] / "benchmarks" / "profile_kernels.py")
    assert spec is not None and spec.loader is not None
    pk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pk)
    problem = Problem(B=1, T=37, H=2, K=16, V=32, dtype="float32", training=True, device="cpu")
    r = pk.profile_one(problem, "torch", {"chunk_size": 16}, iters=1)
    assert r["config"] == {"chunk_size": 16} and r["kernel_ms_per_step"] > 0
    assert len(r["kernels"]) > 3
    assert abs(sum(k["share"] for k in r["kernels"]) - 1.0) < 1e-6
    assert r["kernels"] == sorted(r["kernels"], key=lambda k: -k["ms"])


def test_git_commit_says_when_the_tree_is_not_that_commit(tmp_path: Path) -> None:
    """Reports record the commit; a working tree that differs from it is marked "+dirty"."""
    import shutil
    import subprocess

    from eda_tune.bench.runner import _git_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    clean = _git_commit(str(tmp_path))
    assert clean and "+" not in clean
    (tmp_path / "a.py").write_text("x = 2\n")
    assert _git_commit(str(tmp_path)) == clean + "+dirty"
