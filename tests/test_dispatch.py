"""The runtime dispatcher: tuned results -> nearest class -> (backend, config), observed through a spy."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from eda_tune import chunk_eda, dispatch
from eda_tune import results as R
from eda_tune.backends import get_backend, register, unregister
from eda_tune.checking import make_inputs, reference_outputs, rel_error
from eda_tune.errors import BackendUnavailable, EdaInputError
from eda_tune.hardware import detect
from eda_tune.problem import Config, Problem, ShapeClass
from eda_tune.search.space import SearchSpace
from kernel_variants.torch_chunk.backend import TorchBackend

SPACE = {"backend": "spy", "parameters": {"chunk_size": {"choices": [16, 32, 64, 128]},
                                          "solver": {"choices": ["triangular", "doubling"]}},
         "constraints": [{"expr": "chunk_size <= max(16, next_pow2(T))", "reason": "chunk past T"}],
         "default": {"chunk_size": 64, "solver": "triangular"}}


class SpyBackend(TorchBackend):
    """The eager torch kernel, recording every (problem, config) it builds."""

    name = "spy"
    priority = 1000

    def __init__(self, backward: bool = True) -> None:
        super().__init__()
        self.built: list[tuple[str, dict[str, Any]]] = []
        self.supports_backward = backward

    @property
    def search_space(self) -> SearchSpace:  # type: ignore[override]
        return SearchSpace.from_mapping(SPACE, source="<spy>")

    def _build(self, problem: Problem, config: Config) -> Any:
        self.built.append((problem.key, config.to_dict()))
        return super()._build(problem, config)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SpyBackend]:
    monkeypatch.setenv("EDA_TUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EDA_TUNE_RESULTS_DIR", str(tmp_path / "user"))
    monkeypatch.delenv("EDA_TUNE_BACKEND", raising=False)
    monkeypatch.setattr(R, "shipped_results_dir", lambda: tmp_path / "shipped")
    spy = register(SpyBackend(), replace=True)
    dispatch.reset()
    yield spy  # type: ignore[misc]
    unregister("spy")
    dispatch.reset()


@pytest.fixture
def spy(isolated: SpyBackend) -> SpyBackend:
    return isolated


SLUG = detect("cpu").slug


def _problem(T: int = 37, B: int = 2, H: int = 2, K: int = 16, V: int = 16, **kw: Any) -> Problem:
    return Problem(B=B, T=T, H=H, K=K, V=V, dtype="float32", gate=True, device="cpu", **kw)


def _write(folder: Path, *entries: tuple[Problem, str, dict[str, Any], float]) -> Path:
    res = R.new_results({"name": "test cpu", "slug": SLUG})
    for problem, backend, config, ms in entries:
        res.set_backend(ShapeClass.of(problem), backend,
                        R.BackendResult(config=config, time_ms=ms, default_time_ms=ms * 2, trials=5, failed=0),
                        problem=problem)
    R.write(folder / f"{SLUG}.yaml", res, merge_existing=True)
    return folder / f"{SLUG}.yaml"


def _check(out: tuple[torch.Tensor, torch.Tensor | None], inputs: dict[str, Any]) -> None:
    ref = reference_outputs(inputs)
    assert rel_error(out[0], ref["o"]) < 2e-3


def test_builds_the_config_the_yaml_names(tmp_path: Path, spy: SpyBackend) -> None:
    p = _problem()
    _write(tmp_path / "user", (p, "spy", {"chunk_size": 32, "solver": "doubling"}, 0.1),
           (p, "torch", {"chunk_size": 16, "solver": "triangular"}, 0.5))
    inputs = make_inputs(p, seed=1)
    out = chunk_eda(**inputs)
    assert spy.built == [(p.key, {"chunk_size": 32, "solver": "doubling"})]
    _check(out, inputs)
    chunk_eda(**inputs)
    chunk_eda(**make_inputs(p, seed=2))
    assert len(spy.built) == 1  # built once per process
    choice = dispatch.plan(p)
    assert choice.backend is spy and "tuned" in choice.source


def test_nearest_class_rule(tmp_path: Path, spy: SpyBackend) -> None:
    near, far = _problem(T=256), _problem(T=16384, B=1, H=2)
    _write(tmp_path / "user", (near, "spy", {"chunk_size": 16, "solver": "doubling"}, 0.1),
           (far, "spy", {"chunk_size": 128, "solver": "triangular"}, 0.1))
    # T=700 -> bucket 1024: 2 octaves from 256, 4 from 16384
    assert dispatch.plan(_problem(T=700)).config.to_dict() == {"chunk_size": 16, "solver": "doubling"}
    # T=9000 -> bucket 16384: the far class exactly
    assert dispatch.plan(_problem(T=9000)).config.to_dict() == {"chunk_size": 128, "solver": "triangular"}
    # other K: no compatible class -> the preferred backend's default, never the spy's tuned config
    other = dispatch.plan(_problem(K=32))
    assert other.source.startswith("default") and other.backend is not spy


def test_tuned_config_that_breaks_a_constraint_falls_through(tmp_path: Path, spy: SpyBackend) -> None:
    tuned_at = _problem(T=4096, B=1, H=8)
    _write(tmp_path / "user", (tuned_at, "spy", {"chunk_size": 128, "solver": "doubling"}, 0.1),
           (tuned_at, "torch", {"chunk_size": 16, "solver": "doubling"}, 0.2))
    small = _problem(T=20)  # chunk 128 > next_pow2(20): the spy's config does not fit
    choice = dispatch.plan(small)
    assert choice.backend.name == "torch" and choice.config.to_dict()["chunk_size"] == 16


def test_fallback_warning_once(spy: SpyBackend) -> None:
    p = _problem()
    with pytest.warns(dispatch.NoTunedResultsWarning, match=r"eda-tune tune") as record:
        chunk_eda(**make_inputs(p, seed=0))
        chunk_eda(**make_inputs(_problem(T=50), seed=0))
    assert len([w for w in record if issubclass(w.category, dispatch.NoTunedResultsWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", dispatch.NoTunedResultsWarning)
        chunk_eda(**make_inputs(_problem(T=60), seed=0))  # still no second warning
    assert dispatch.plan(p).source == "default (no results)"


def test_env_backend_forces_and_call_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               spy: SpyBackend) -> None:
    p = _problem()
    _write(tmp_path / "user", (p, "torch", {"chunk_size": 16, "solver": "doubling"}, 0.1),
           (p, "spy", {"chunk_size": 32, "solver": "triangular"}, 0.5))
    assert dispatch.plan(p).backend.name == "torch"
    monkeypatch.setenv("EDA_TUNE_BACKEND", "spy")
    inputs = make_inputs(p, seed=3)
    chunk_eda(**inputs)
    assert spy.built == [(p.key, {"chunk_size": 32, "solver": "triangular"})]  # forced, with its tuned config
    # backend= beats the env var; config= beats the tuned config
    b, _ = dispatch.select(p, backend="torch")
    assert b.name == "torch"
    out = chunk_eda(**inputs, config={"chunk_size": 16})
    assert spy.built[-1] == (p.key, {"chunk_size": 16, "solver": "triangular"})
    _check(out, inputs)
    monkeypatch.setenv("EDA_TUNE_BACKEND", "nonesuch")
    with pytest.raises(EdaInputError, match=r"EDA_TUNE_BACKEND.*must be one of .*torch"):
        dispatch.select(p)


def test_results_dir_env_overrides_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           spy: SpyBackend) -> None:
    p, other = _problem(), _problem(K=32, V=32)
    _write(tmp_path / "shipped", (p, "spy", {"chunk_size": 16, "solver": "triangular"}, 0.1),
           (other, "spy", {"chunk_size": 16, "solver": "doubling"}, 0.1))
    assert dispatch.plan(p).config.to_dict() == {"chunk_size": 16, "solver": "triangular"}
    _write(tmp_path / "elsewhere", (p, "spy", {"chunk_size": 32, "solver": "triangular"}, 0.1))
    monkeypatch.setenv("EDA_TUNE_RESULTS_DIR", str(tmp_path / "elsewhere"))
    assert dispatch.plan(p).config.to_dict() == {"chunk_size": 32, "solver": "triangular"}  # user wins
    assert dispatch.plan(other).config.to_dict() == {"chunk_size": 16, "solver": "doubling"}  # shipped kept
    chunk_eda(**make_inputs(p, seed=0))
    assert spy.built[-1][1] == {"chunk_size": 32, "solver": "triangular"}


def test_training_goes_to_a_backend_with_backward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fwd_only = SpyBackend(backward=False)
    register(fwd_only, replace=True)
    p = _problem()
    _write(tmp_path / "user", (p, "spy", {"chunk_size": 32, "solver": "doubling"}, 0.1),
           (p, "torch", {"chunk_size": 16, "solver": "doubling"}, 0.9))
    inputs = make_inputs(p, seed=0, requires_grad=True)
    o, _ = chunk_eda(**inputs)
    o.sum().backward()
    assert fwd_only.built == []
    assert inputs["q"].grad is not None
    assert dispatch.plan(p.replace(training=True)).backend.name == "torch"
    assert dispatch.plan(p).backend is fwd_only  # inference still gets the winner
    monkeypatch.setenv("EDA_TUNE_BACKEND", "spy")
    with pytest.raises(BackendUnavailable, match="no backward"):
        dispatch.select(p.replace(training=True))


def test_training_call_on_a_forward_only_class_gets_the_default_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spy: SpyBackend) -> None:
    p = _problem()
    tuned = {"chunk_size": 32, "solver": "doubling"}  # not the spy's default (64, triangular)
    _write(tmp_path / "user", (p, "spy", tuned, 0.1), (p, "torch", {"chunk_size": 16, "solver": "doubling"}, 0.5))
    train = p.replace(training=True)
    choice = dispatch.plan(train)
    assert choice.backend is spy and choice.config.to_dict() == spy.default_config(train).to_dict()
    assert "forward-only" in choice.source
    assert dispatch.plan(p).config.to_dict() == tuned  # inference keeps the tuned config
    # the bench's "[tuned]" rows time what a call gets: no tuned config for training here
    from eda_tune.bench.runner import tuned_config
    assert tuned_config("spy", p) == tuned and tuned_config("spy", train) is None
    inputs = make_inputs(p, seed=3, requires_grad=True)
    o, _ = chunk_eda(**inputs)
    o.sum().backward()
    assert spy.built == [(train.key, {"chunk_size": 64, "solver": "triangular"})]
    # a forced backend on a training call: its default too, not the forward tuning
    monkeypatch.setenv("EDA_TUNE_BACKEND", "spy")
    dispatch.reset()
    assert dispatch.plan(train).config.to_dict() == {"chunk_size": 64, "solver": "triangular"}
    # a training class, once tuned, is used as tuned
    monkeypatch.delenv("EDA_TUNE_BACKEND")
    _write(tmp_path / "user", (train, "spy", {"chunk_size": 16, "solver": "doubling"}, 0.2))
    dispatch.reset()
    assert dispatch.plan(train).config.to_dict() == {"chunk_size": 16, "solver": "doubling"}


def test_bench_checks_the_gradients_of_the_config_it_times(tmp_path: Path, spy: SpyBackend) -> None:
    """The bench checks gradients at a smaller problem; it must check the config the full-size
    training problem gets (its own class's tuned config), not the one of the small problem's class."""
    from eda_tune.bench.runner import BenchOptions, References, backend_targets, bench_target, check_problem

    big = _problem(T=2048, H=4, training=True)
    small = check_problem(big, max_t=40)  # another class: T and B*H in lower buckets
    tuned = {"chunk_size": 16, "solver": "doubling"}
    _write(tmp_path / "user", (big, "spy", tuned, 0.1),
           (small, "spy", {"chunk_size": 32, "solver": "triangular"}, 0.1))
    targets, _ = backend_targets(["spy"], with_tuned=True, with_baselines=False)
    target = next(t for t in targets if t.variant == "tuned")
    row = bench_target(target, big, References(), BenchOptions(check_max_t=40, measure_ceilings=False), {})
    assert row["status"] == "ok", row
    assert row["check"]["bwd"]["status"] == "pass" and row["check"]["bwd"]["problem"] == small.key
    assert (small.key, tuned) in spy.built and (big.key, tuned) in spy.built
    assert (small.key, {"chunk_size": 32, "solver": "triangular"}) not in spy.built


def test_bench_times_a_tuned_config_equal_to_the_default_once(tmp_path: Path, spy: SpyBackend) -> None:
    """A tuned row whose config is the default row's is a skip that names the default row (H200 run
    82 timed one S4 config at 1.17 and 1.84 ms as default and tuned); a different one is timed."""
    from eda_tune.bench.runner import BenchOptions, NamedShape, backend_targets, run_bench

    p = _problem()
    other = _problem(T=2048, H=4)
    _write(tmp_path / "user", (p, "spy", spy.default_config(p).to_dict(), 0.1),
           (other, "spy", {"chunk_size": 16, "solver": "doubling"}, 0.1))
    targets, _ = backend_targets(["spy"], with_tuned=True, with_baselines=False)
    rep = run_bench(targets, [NamedShape("same", p), NamedShape("tuned", other)],
                    BenchOptions(fwd_only=True, measure_ceilings=False))
    rows = {(r["shape"], r["target"]): r for r in rep["rows"]}
    assert rows[("same", "spy")]["status"] == "ok"
    same = rows[("same", "spy[tuned]")]
    assert same["status"] == "skip" and "spy row" in same["reason"], same
    assert same["config"] == rows[("same", "spy")]["config"]
    assert rows[("tuned", "spy[tuned]")]["status"] == "ok"
    assert rows[("tuned", "spy[tuned]")]["config"] == {"chunk_size": 16, "solver": "doubling"}


def test_never_tunes_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from eda_tune.search import tuner

    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("tuned at call time")

    monkeypatch.setattr(tuner, "run_study", boom)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dispatch.NoTunedResultsWarning)
        o, _ = chunk_eda(**make_inputs(_problem(), seed=0))
    assert torch.isfinite(o).all()


def test_malformed_results_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / f"{SLUG}.yaml").write_text("schema_version: 1\ndevice: {slug: x}\nentries: {a: 1}\n")
    with pytest.raises(R.ResultsError, match=rf"{SLUG}.yaml: entries.a: must be a mapping"):
        dispatch.select(_problem())


def test_select_cache_is_keyed_on_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spy: SpyBackend) -> None:
    p = _problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dispatch.NoTunedResultsWarning)
        first, _ = dispatch.select(p)
    monkeypatch.setenv("EDA_TUNE_BACKEND", "spy")
    assert dispatch.select(p)[0] is spy
    assert get_backend("spy") is spy and first is not spy


@pytest.mark.parametrize("kw", [
    {}, {"gate": False}, {"initial_state": True, "final_state": True}, {"l2norm": True},
    {"dtype": "bfloat16"}, {"grad": True},
])
def test_fast_validation_path_matches_the_full_one(monkeypatch: pytest.MonkeyPatch, kw: dict[str, Any]) -> None:
    from eda_tune import inputs as inputs_mod

    grad = kw.pop("grad", False)
    p = Problem(B=2, T=9, H=3, K=16, V=8, device="cpu", **{"dtype": "float32", **kw})
    x = make_inputs(p, seed=0, requires_grad=grad)
    args = (x["q"], x["k"], x["v"], x["e"], x["g"], x["beta"], x["gamma"], None, x["initial_state"],
            x["output_final_state"], None, x["use_qk_l2norm_in_kernel"])
    fast = inputs_mod.validate_inputs(*args)
    original = inputs_mod._fast_path
    assert inputs_mod._fast_path(*args[:10], args[11]) is not None
    monkeypatch.setattr(inputs_mod, "_fast_path", lambda *a: None)
    full = inputs_mod.validate_inputs(*args)
    assert fast == full and fast[0].training == grad
    # a case the fast path declines still gets the full path's error
    monkeypatch.setattr(inputs_mod, "_fast_path", original)
    with pytest.raises(EdaInputError, match=r"k must have shape \[B, T, H, K\]"):
        inputs_mod.validate_inputs(x["q"], x["k"][:, :4], *args[2:])
