"""Every bad input gets a ValueError/TypeError that names the argument, what was expected and what came."""

from __future__ import annotations

import pytest
import torch

from eda_tune import ConfigError, EdaError, chunk_eda
from eda_tune.checking import make_inputs
from eda_tune.problem import Config, Problem


@pytest.fixture
def inp() -> dict:
    return make_inputs(Problem(B=2, T=10, H=2, K=16, V=8, dtype="float32", device="cpu"), seed=0)


def call(inputs: dict, **over):
    return chunk_eda(**{"backend": "torch", **inputs, **over})


def _raises(exc, match: str, inputs: dict, **over) -> None:
    with pytest.raises(exc, match=match) as info:
        call(inputs, **over)
    assert isinstance(info.value, EdaError)


@pytest.mark.parametrize("name", ["k", "e"])
def test_key_shape(inp, name):
    _raises(ValueError, rf"{name} must have shape \[B, T, H, K\] = \[2, 10, 2, 16\] but got \[2, 10, 2, 8\]",
            inp, **{name: inp[name][..., :8]})


def test_rank(inp):
    _raises(ValueError, r"q must have rank 4 \[B, T, H, K\] but got shape \[2, 10, 32\]", inp,
            q=inp["q"].flatten(2))
    _raises(ValueError, r"k must have rank 4", inp, k=inp["k"].flatten(2))


def test_value_shape(inp):
    _raises(ValueError, r"v must have shape \[B, T, H, V\] = \[2, 10, 2, V\] but got \[2, 9, 2, 8\]", inp,
            v=inp["v"][:, :9])


@pytest.mark.parametrize("name", ["beta", "gamma", "g"])
def test_strength_shape(inp, name):
    _raises(ValueError, rf"{name} must have shape \[B, T, H\] = \[2, 10, 2\] but got \[2, 9, 2\]", inp,
            **{name: inp[name][:, :9]})
    _raises(ValueError, rf"{name} must have rank 3 \[B, T, H\] = \[2, 10, 2\] but got shape \[2, 10\]", inp,
            **{name: inp[name][..., 0]})


def test_not_a_tensor(inp):
    _raises(TypeError, r"q must be a torch.Tensor but got list", inp, q=[1.0])
    _raises(TypeError, r"beta must be a torch.Tensor but got float", inp, beta=0.5)


def test_dtype(inp):
    _raises(TypeError, r"q must have a floating dtype .* but got torch.int64", inp, q=inp["q"].long())
    _raises(TypeError, r"v must have q's dtype torch.float32 but got torch.float16", inp, v=inp["v"].half())
    _raises(TypeError, r"g must have a floating dtype", inp, g=torch.zeros(2, 10, 2, dtype=torch.int32))


def test_device_mix(inp):
    meta = inp["v"].to("meta")
    _raises(ValueError, r"v must be on q's device cpu but is on meta", inp, v=meta)


def test_scale(inp):
    _raises(ValueError, r"scale must be a finite number > 0 but got -1.0", inp, scale=-1.0)
    _raises(TypeError, r"scale must be a float or None but got str", inp, scale="1")


def test_flags(inp):
    _raises(TypeError, r"output_final_state must be a bool but got int", inp, output_final_state=1)
    _raises(TypeError, r"use_qk_l2norm_in_kernel must be a bool", inp, use_qk_l2norm_in_kernel="yes")


def test_initial_state_shape(inp):
    _raises(ValueError, r"initial_state must have shape \[N, H, K, V\] = \[2, 2, 16, 8\] .* but got "
            r"\[2, 2, 8, 16\]", inp, initial_state=torch.zeros(2, 2, 8, 16))


@pytest.fixture
def packed() -> dict:
    return make_inputs(Problem(B=1, T=12, H=2, K=16, V=8, dtype="float32", device="cpu"), seed=1)


def test_cu_seqlens_rules(packed, inp):
    cu = lambda *x: torch.tensor(x, dtype=torch.int32)
    _raises(ValueError, r"cu_seqlens must start at 0 but starts at 1", packed, cu_seqlens=cu(1, 5, 12))
    _raises(ValueError, r"cu_seqlens must end at T = 12 but ends at 11", packed, cu_seqlens=cu(0, 5, 11))
    _raises(ValueError, r"cu_seqlens must be strictly increasing but cu_seqlens\[2\] = 5 <= cu_seqlens\[1\] = 7",
            packed, cu_seqlens=cu(0, 7, 5, 12))
    _raises(ValueError, r"with cu_seqlens the batch size B must be 1 .* but got B = 2", inp,
            cu_seqlens=cu(0, 4, 10))
    _raises(TypeError, r"cu_seqlens must have dtype int32 or int64 but got torch.float32", packed,
            cu_seqlens=torch.tensor([0.0, 12.0]))
    _raises(ValueError, r"cu_seqlens must be 1-D with N \+ 1 >= 2 entries", packed, cu_seqlens=cu(0))
    _raises(ValueError, r"initial_state must have shape \[N, H, K, V\] = \[2, 2, 16, 8\]", packed,
            cu_seqlens=cu(0, 5, 12), initial_state=torch.zeros(1, 2, 16, 8))


def test_unknown_backend_lists_known(inp):
    with pytest.raises(ValueError, match=r"backend must be one of \[.*'torch'.*\] but got 'cuda_magic'"):
        chunk_eda(**inp, backend="cuda_magic")


def test_unknown_config_key(inp):
    with pytest.raises(ConfigError, match=r"unknown tunables \['BLOCK'\] for backend 'torch'; known: "
                       r"\['chunk_size', 'solver'\]"):
        chunk_eda(**inp, backend="torch", config={"BLOCK": 4})


def test_out_of_range_config(inp):
    with pytest.raises(ConfigError, match=r"chunk_size must be one of \[16, 32, 64, 128\] but got 48"):
        chunk_eda(**inp, backend="torch", config={"chunk_size": 48})
    with pytest.raises(ConfigError, match=r"solver must be one of"):
        chunk_eda(**inp, backend="torch", config={"solver": "lu"})
    with pytest.raises(ConfigError, match=r"config must be a mapping"):
        chunk_eda(**inp, backend="torch", config=[("chunk_size", 16)])


def test_partial_config_is_completed(inp):
    o, _ = chunk_eda(**inp, backend="torch", config={"chunk_size": 16})
    assert o.shape == (2, 10, 2, 8) and torch.isfinite(o).all()


def test_config_key_is_stable():
    a = Config.from_dict({"b": 1, "a": "x"})
    b = Config.from_dict({"a": "x", "b": 1})
    assert a == b and a.key == "a=x,b=1" and hash(a) == hash(b)


def test_problem_rejects_bad_dims():
    with pytest.raises(ValueError, match=r"Problem.K must be a positive int but got 0"):
        Problem(B=1, T=1, H=1, K=0, V=1)
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        Problem(B=1, T=1, H=1, K=1, V=1, dtype="int8")
