"""Results files: schema, validation errors, round trip, merge, atomic write, lookup folders, slugs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from eda_tune import results as R
from eda_tune.errors import ResultsError
from eda_tune.hardware import detect, slugify
from eda_tune.problem import Problem, ShapeClass

DEVICE = {"name": "NVIDIA H100 80GB HBM3", "slug": "h100-80gb-hbm3", "compute_capability": "9.0",
          "driver": "570.86"}


def _problem(T: int = 4096, K: int = 128) -> Problem:
    return Problem(B=8, T=T, H=16, K=K, V=K, dtype="bfloat16", gate=True)


def _results(T: int = 4096, backend: str = "triton", time_ms: float = 1.5, K: int = 128) -> R.Results:
    res = R.new_results(DEVICE, {"torch": "2.11.0", "triton": "3.6.0", "tilelang": None})
    p = _problem(T, K)
    res.set_backend(ShapeClass.of(p), backend,
                    R.BackendResult(config={"BT": 64, "num_warps": 4}, time_ms=time_ms, default_time_ms=2.0,
                                    trials=20, failed=2), problem=p, shape="S1")
    return res


def test_round_trip_plain_values(tmp_path: Path) -> None:
    res = _results()
    res.set_backend(ShapeClass.of(_problem()), "torch_compile",
                    R.BackendResult(config=None, time_ms=None, trials=3, failed=3,
                                    extra={"reason": "compile error: boom"}))
    path = tmp_path / "h100-80gb-hbm3.yaml"
    R.write(path, res)
    text = path.read_text()
    assert "!!python" not in text
    raw = yaml.safe_load(text)
    assert list(raw) == ["schema_version", "device", "software", "entries"]
    back = R.load(path)
    assert back.to_dict() == res.to_dict()
    entry = back.entries[ShapeClass.of(_problem()).key]
    assert entry.winner == "triton"
    assert entry.backends["triton"].config == {"BT": 64, "num_warps": 4}
    assert entry.backends["torch_compile"].extra["reason"] == "compile error: boom"
    assert entry.problem == _problem()


def test_merge_keeps_other_classes_and_backends(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    R.write(path, _results(T=4096, backend="triton", time_ms=1.5))
    R.write(path, _results(T=16384, backend="triton", time_ms=3.0))         # another class
    R.write(path, _results(T=4096, backend="tilelang", time_ms=1.2))        # same class, other backend
    back = R.load(path)
    k1, k2 = ShapeClass.of(_problem(4096)).key, ShapeClass.of(_problem(16384)).key
    assert set(back.entries) == {k1, k2}
    assert set(back.entries[k1].backends) == {"triton", "tilelang"}
    assert back.entries[k1].winner == "tilelang"  # recomputed from the times
    R.write(path, _results(T=4096, backend="tilelang", time_ms=9.0))        # retuned slower
    assert R.load(path).entries[k1].winner == "triton"


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.yaml"
    R.write(path, _results())
    before = path.read_text()

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        R.write(path, _results(T=16384))
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.yaml"]  # no temp file left behind


def test_write_refuses_to_clobber_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("schema_version: 1\ndevice: {slug: a}\nentries: [1, 2]\n")
    with pytest.raises(ResultsError, match="entries"):
        R.write(path, _results())
    assert "[1, 2]" in path.read_text()


def _valid() -> dict:
    return _results().to_dict()


def _mutate(fn):
    data = _valid()
    fn(data)
    return data


KEY = ShapeClass.of(_problem()).key


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(schema_version=2), r"schema_version: must be 1 .* but got 2"),
    (lambda d: d.update(extra=1), r"unknown keys \['extra'\]"),
    (lambda d: d.update(device={"name": "x"}), r"device: must be a mapping with at least a non-empty 'slug'"),
    (lambda d: d["entries"][KEY].update(winner="nope"), r"'winner' must be one of its backends"),
    (lambda d: d["entries"][KEY]["backends"]["triton"].update(time_ms=-1.0), r"'time_ms' must be a number > 0"),
    (lambda d: d["entries"][KEY]["backends"]["triton"].update(config=None),
     r"'config' and 'time_ms' must both be set or both be null"),
    (lambda d: d["entries"][KEY]["backends"]["triton"].update(trials="many"), r"'trials' must be an int >= 0"),
    (lambda d: d["entries"][KEY]["shape_class"].update(T=1024), r"the key does not match its shape_class"),
    (lambda d: d["entries"][KEY]["problem"].update(Q=1), r"'problem' is not a valid problem: unknown problem"),
    (lambda d: d["entries"][KEY]["backends"]["triton"].update(colour="red"), r"unknown keys \['colour'\]"),
])
def test_validation_errors_name_file_and_place(tmp_path: Path, mutate, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_mutate(mutate)))
    with pytest.raises(ResultsError, match=match) as info:
        R.load(path)
    assert str(path) in str(info.value)


def test_not_yaml_and_python_tags_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("schema_version: 1\ndevice: !!python/object:os.system {}\n")
    with pytest.raises(ResultsError, match="not valid YAML"):
        R.load(path)
    with pytest.raises(ResultsError, match="cannot read"):
        R.load(tmp_path / "missing.yaml")


def test_results_dirs_user_folder_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped, user = tmp_path / "shipped", tmp_path / "user"
    monkeypatch.setattr(R, "shipped_results_dir", lambda: shipped)
    monkeypatch.setenv("EDA_TUNE_RESULTS_DIR", str(user))
    assert R.results_dirs() == [shipped, user]
    R.write(shipped / "h100-80gb-hbm3.yaml", _results(T=4096, time_ms=1.5))
    R.write(shipped / "h100-80gb-hbm3.yaml", _results(T=16384, time_ms=3.0))
    R.write(user / "h100-80gb-hbm3.yaml", _results(T=4096, time_ms=1.0))
    found = R.find("h100-80gb-hbm3")
    assert found is not None
    assert found.entries[KEY].backends["triton"].time_ms == 1.0          # user file wins
    assert ShapeClass.of(_problem(16384)).key in found.entries            # shipped class kept
    assert R.find("a100") is None


def test_user_results_dir_defaults_to_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDA_TUNE_RESULTS_DIR", raising=False)
    monkeypatch.setenv("EDA_TUNE_CACHE", str(tmp_path / "c"))
    assert R.user_results_dir() == tmp_path / "c" / "results"
    assert R.shipped_results_dir().name == "results"


@pytest.mark.parametrize("name, slug", [
    ("NVIDIA H100 80GB HBM3", "h100-80gb-hbm3"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
    ("NVIDIA GeForce RTX 4090", "geforce-rtx-4090"),
])
def test_gpu_slug_rule(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_cpu_slug_rule() -> None:
    assert slugify("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "cpu-") == "cpu-intel-xeon-platinum-8481c"
    assert slugify("AMD EPYC 7B13 64-Core Processor", "cpu-") == "cpu-amd-epyc-7b13"
    info = detect("cpu")
    assert info.slug.startswith("cpu-") and info.kind == "cpu" and info.compute_capability is None


def test_device_slug_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDA_TUNE_DEVICE_SLUG", "My Box")
    assert detect("cpu").slug == "my-box"


def test_shipped_results_name_every_tunable_of_a_valid_config() -> None:
    """A results file written before a tunable existed would be completed with today's default at
    dispatch time, which is not the config that was measured: every shipped config must name every
    tunable of its backend's search space and pass its constraints for the problem it was tuned on."""
    from eda_tune.backends import get_backend

    files = sorted(R.shipped_results_dir().glob("*.yaml"))
    assert files, "no shipped results"
    for path in files:
        res = R.load(path)
        for key, entry in res.entries.items():
            for name, br in entry.backends.items():
                backend = get_backend(name)
                space = backend.search_space
                missing = sorted(set(space.parameters) - set(br.config))
                assert not missing, f"{path.name} {key} {name}: config lacks {missing}"
                assert entry.problem is not None, f"{path.name} {key}: no problem"
                ok, why = backend.check_config(entry.problem, br.config)
                assert ok, f"{path.name} {key} {name}: {why}"
