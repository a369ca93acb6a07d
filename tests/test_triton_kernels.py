"""Kernel-level tests of the Triton backend: configs of its search space against the float64
reference, forward and backward (CPU: Triton's interpreter; GPU-marked tests at larger shapes)."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import pytest
import torch

from eda_tune.checking import GRAD_TOL, make_inputs, rel_error, upcast
from eda_tune.problem import Problem
from eda_tune.reference import naive_recurrent_eda

pytest.importorskip("triton")

from kernel_variants.triton.backend import TritonBackend, triton_smem  # noqa: E402
from kernel_variants.triton.chunk import TritonParams, chunk_eda_triton  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
if not HAS_CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("without CUDA these tests need TRITON_INTERPRET=1", allow_module_level=True)

NAMES = ("q", "k", "v", "e", "g", "beta", "gamma", "initial_state")


def _run(inputs: dict, params: TritonParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    K = inputs["q"].shape[-1]
    return chunk_eda_triton(inputs["q"], inputs["k"], inputs["v"], inputs["e"], inputs["g"],
                            inputs["beta"], inputs["gamma"], K ** -0.5, inputs["initial_state"],
                            inputs["output_final_state"], inputs["cu_seqlens"],
                            inputs["use_qk_l2norm_in_kernel"], params)


def _check(problem: Problem, params: TritonParams, seed: int, grads: bool, tol: float) -> None:
    """Run one config on fresh inputs; compare o, the final state and (with ``grads``) every
    input's gradient of a random linear loss with autograd of the float64 recurrence."""
    inputs = make_inputs(problem, seed=seed, device=DEVICE, requires_grad=grads)
    o, final = _run(inputs, params)
    assert not torch.isnan(o).any(), "NaN in o"
    up = upcast(inputs)
    ro, rf = naive_recurrent_eda(**up)
    errors = {"o": rel_error(o, ro)}
    if problem.final_state:
        errors["final_state"] = rel_error(final, rf)
    if grads:
        gen = torch.Generator().manual_seed(seed + 1)
        do = torch.randn(o.shape, generator=gen).to(DEVICE)
        loss, rloss = (o.float() * do).sum(), (ro * do.double()).sum()
        if final is not None:
            dht = torch.randn(final.shape, generator=gen).to(DEVICE)
            loss, rloss = loss + (final * dht).sum(), rloss + (rf * dht.double()).sum()
        names = [n for n in NAMES if isinstance(inputs[n], torch.Tensor)]
        got = torch.autograd.grad(loss, [inputs[n] for n in names])
        want = torch.autograd.grad(rloss, [up[n] for n in names])
        errors.update({f"d{n}": rel_error(a, b) for n, a, b in zip(names, got, want)})
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{problem.key} {params}: errors over {tol}: {bad} (all: {errors})"


CONFIGS = [
    TritonParams(BT=16, BK=16, BV=16, delta="wu", fuse_o=False, num_warps=4),
    TritonParams(BT=32, BK=32, BV=16, delta="wu", fuse_o=True, num_warps=4),
    TritonParams(BT=16, BK=32, BV=32, delta="wu", fuse_o=True, precision="ieee", num_warps=4),
    TritonParams(BT=64, BK=16, BV=32, delta="wu", fuse_o=False, num_warps=4, bwd_rec="fused"),
    # Delta from the stored chunk inverse (W and U never stored), plain and with the fused output,
    # the inverse by the doubling product (tm_solver: doubling), the state kernel loading each
    # chunk's inputs in its own step (h_prefetch: false)
    TritonParams(BT=16, BK=16, BV=16, delta="tm", fuse_o=False, tm_solver="doubling", h_prefetch=False),
    TritonParams(BT=32, BK=32, BV=16, fuse_o=True, delta="tm", warps_bwd=2, tm_solver="doubling",
                 h_prefetch=False),
    # the chunk inverse from its four blocks (tm_solver: blocks, the default)
    TritonParams(BT=16, BK=16, BV=16, delta="tm", fuse_o=False, tm_solver="blocks"),
    TritonParams(BT=32, BK=32, BV=16, fuse_o=True, delta="tm", tm_solver="blocks"),
    # the state kernel loading the next chunk's inputs ahead (h_prefetch, the default), with and
    # without the output
    TritonParams(BT=16, BK=16, BV=16, fuse_o=True, h_prefetch=True),
    TritonParams(BT=32, BK=32, BV=16, fuse_o=False, h_prefetch=True),
]

FWD_PROBLEMS = {
    "base": Problem(B=2, T=45, H=2, K=24, V=40, dtype="float32", initial_state=True, final_state=True,
                    device=DEVICE),
    "nogate-varlen": Problem(B=1, T=50, H=2, K=16, V=16, dtype="float32", gate=False, num_seqs=3,
                             initial_state=True, final_state=True, device=DEVICE),
    "l2norm-T1": Problem(B=1, T=1, H=1, K=16, V=16, dtype="float32", l2norm=True, final_state=True,
                         device=DEVICE),
}


@pytest.mark.parametrize("case", list(FWD_PROBLEMS))
@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_forward_configs(case: str, cfg: int) -> None:
    _check(FWD_PROBLEMS[case], CONFIGS[cfg], seed=cfg, grads=False, tol=1e-5)


def test_forward_bf16() -> None:
    problem = Problem(B=1, T=40, H=2, K=32, V=32, dtype="bfloat16", final_state=True, device=DEVICE)
    _check(problem, TritonParams(BT=16, BK=32, BV=32), seed=3, grads=False, tol=2e-2)


@pytest.mark.parametrize("cfg", [0, 1, 3, 5, 7, 8])
def test_backward_configs(cfg: int) -> None:
    problem = Problem(B=2, T=37, H=2, K=16, V=24, dtype="float32", initial_state=True, final_state=True,
                      training=True, device=DEVICE)
    _check(problem, CONFIGS[cfg], seed=10 + cfg, grads=True, tol=1e-5)


def test_backward_torch_intra() -> None:
    """The PyTorch intra-chunk backward (config bwd_intra=torch) computes the same gradients."""
    problem = Problem(B=1, T=30, H=2, K=16, V=16, dtype="float32", initial_state=True, final_state=True,
                      training=True, device=DEVICE)
    _check(problem, TritonParams(BT=16, BK=16, BV=16, bwd_intra="torch"), seed=4, grads=True, tol=1e-5)


def test_backward_varlen_nogate_l2norm() -> None:
    problem = Problem(B=1, T=41, H=2, K=16, V=16, dtype="float32", gate=False, num_seqs=3, l2norm=True,
                      initial_state=True, final_state=True, training=True, device=DEVICE)
    _check(problem, TritonParams(BT=16, BK=16, BV=16), seed=7, grads=True, tol=1e-5)


def test_search_space_defaults_hold() -> None:
    backend = TritonBackend()
    for K, V in ((64, 64), (128, 128), (256, 256), (100, 36)):
        problem = Problem(B=8, T=4096, H=16, K=K, V=V, dtype="bfloat16", device="cuda")
        cfg = backend.default_config(problem)
        ok, why = backend.check_config(problem, cfg)
        assert ok, why
        params = TritonParams.from_config(cfg)
        assert triton_smem(params.BT, params.BK, params.BV, params.num_stages, K, 2) <= 232448


def test_supports_cpu_needs_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = TritonBackend()
    problem = Problem(B=1, T=8, H=1, K=16, V=16, dtype="float32", device="cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, why = backend.supports(problem)
    assert not ok and "TRITON_INTERPRET" in why
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend.supports(problem) == (True, "")
    assert not backend.supports(problem.replace(K=300))[0]
    assert not backend.supports(problem.replace(dtype="float64"))[0]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("delta", ["wu", "tm"])
@pytest.mark.parametrize("fuse_o", [False, True])
def test_gpu_bf16_forward_backward(fuse_o: bool, delta: str) -> None:
    problem = Problem(B=2, T=300, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    _check(problem, TritonParams(fuse_o=fuse_o, delta=delta, BT=16 if delta == "tm" else 32), seed=5,
           grads=True, tol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_fp32_ieee_varlen_k256() -> None:
    problem = Problem(B=1, T=200, H=2, K=256, V=256, dtype="float32", num_seqs=3, initial_state=True,
                      final_state=True, training=True, device="cuda")
    # ieee dots with the PyTorch intra-chunk backward (search_spaces/triton.yaml: the Triton one
    # did not compile in reasonable time with ieee dots on H200)
    _check(problem, TritonParams(BT=16, BV=32, precision="ieee", bwd_intra="torch"), seed=6, grads=True,
           tol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("per_sm,scratch", [(1, "fp32"), (2, "fp32"), (2, "half")])
def test_gpu_fused_backward(per_sm: int, scratch: str) -> None:
    """The fused backward on the GPU with far more chunks than programs (every program reuses its
    scratch slot many times, concurrently with the other programs)."""
    problem = Problem(B=2, T=2000, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    _check(problem, TritonParams(bwd_intra="fused", fused_per_sm=per_sm, bwd_scratch=scratch), seed=8,
           grads=True, tol=2e-2)


# bwd_intra=triton2: the two-block intra-chunk backward (chunk_bwd.eda_bwd_intra2_kernel)
TRITON2_CASES = {
    # odd T, K != V (two V tiles), gate, initial and final state
    "odd-T-KneV-bt16": (Problem(B=2, T=37, H=2, K=16, V=24, dtype="float32", initial_state=True,
                                final_state=True, training=True, device=DEVICE),
                        TritonParams(BT=16, BK=16, BV=16, bwd_intra="triton2")),
    "odd-T-KneV-bt32": (Problem(B=1, T=45, H=2, K=32, V=16, dtype="float32", initial_state=True,
                                final_state=True, training=True, device=DEVICE),
                        TritonParams(BT=32, BK=16, BV=16, bwd_intra="triton2")),
    "nogate-varlen-l2norm": (Problem(B=1, T=41, H=2, K=16, V=16, dtype="float32", gate=False,
                                     num_seqs=3, l2norm=True, initial_state=True, final_state=True,
                                     training=True, device=DEVICE),
                             TritonParams(BT=16, BK=16, BV=16, bwd_intra="triton2")),
    "varlen-bt32": (Problem(B=1, T=75, H=1, K=16, V=32, dtype="float32", num_seqs=3,
                            initial_state=True, final_state=True, training=True, device=DEVICE),
                    TritonParams(BT=32, BK=16, BV=16, bwd_intra="triton2")),
    "no-state-T1": (Problem(B=1, T=1, H=1, K=16, V=16, dtype="float32", training=True, device=DEVICE),
                    TritonParams(BT=16, BK=16, BV=16, bwd_intra="triton2")),
    # K = V = 64 with several K and V tiles, and with one tile covering V
    "kv64-bv32": (Problem(B=1, T=40, H=2, K=64, V=64, dtype="float32", initial_state=True,
                          final_state=True, training=True, device=DEVICE),
                  TritonParams(BT=16, BK=32, BV=32, bwd_intra="triton2")),
    "kv64-bv64": (Problem(B=1, T=40, H=2, K=64, V=64, dtype="float32", initial_state=True,
                          final_state=True, training=True, device=DEVICE),
                  TritonParams(BT=32, BK=64, BV=64, bwd_intra="triton2")),
    "bf16": (Problem(B=1, T=33, H=2, K=32, V=32, dtype="bfloat16", initial_state=True,
                     final_state=True, training=True, device=DEVICE),
             TritonParams(BT=16, BK=32, BV=32, bwd_intra="triton2")),
}


@pytest.mark.parametrize("case", list(TRITON2_CASES))
def test_backward_triton2(case: str) -> None:
    """Every gradient of the two-block intra backward against autograd of the float64 reference
    (eda_tune.checking.run_and_check: GRAD_TOL), and for float32 also at 1e-5."""
    from eda_tune.checking import run_and_check

    problem, params = TRITON2_CASES[case]

    def fn(q, k, v, e, g, beta, gamma, initial_state, output_final_state, cu_seqlens,
           use_qk_l2norm_in_kernel):
        return chunk_eda_triton(q, k, v, e, g, beta, gamma, q.shape[-1] ** -0.5, initial_state,
                                output_final_state, cu_seqlens, use_qk_l2norm_in_kernel, params)

    res = run_and_check(fn, problem, seed=20, grads=True)
    grads = [n for n in res.errors if n.startswith("d")]
    assert {"dq", "dk", "dv", "de", "dbeta", "dgamma"} <= set(grads), res.errors
    assert problem.gate == ("dg" in grads) and problem.initial_state == ("dinitial_state" in grads)
    assert res.ok, f"{case}: {res.reason}"
    if problem.dtype == "float32":
        bad = {n: x for n, x in res.errors.items() if not x <= 1e-5}
        assert not bad, f"{case}: errors over 1e-5: {bad}"


# bwd_intra=fused: the grad and intra kernels as one persistent kernel with one scratch slot per
# program (chunk_bwd.eda_bwd_fused_kernel). On CPU it runs 4 * fused_per_sm programs, so with
# fused_per_sm 1 every program walks several chunks and reuses its slot.
FUSED_CASES = {name: (problem, dataclasses.replace(params, bwd_intra="fused", fused_per_sm=per_sm))
               for name, (problem, params) in TRITON2_CASES.items() for per_sm in (1, 64)
               if per_sm == 1 or name == "odd-T-KneV-bt16"}
FUSED_CASES = {f"{n}-{p.fused_per_sm}": (pr, p) for n, (pr, p) in FUSED_CASES.items()}
FUSED_CASES["segments-1"] = (
    Problem(B=2, T=53, H=2, K=16, V=24, dtype="float32", initial_state=True, final_state=True,
            training=True, device=DEVICE),
    TritonParams(BT=16, BK=16, BV=16, segments=3, bwd_intra="fused", fused_per_sm=1))
FUSED_CASES["bf16-half-scratch-1"] = (
    Problem(B=2, T=70, H=2, K=32, V=48, dtype="bfloat16", initial_state=True, final_state=True,
            training=True, device=DEVICE),
    TritonParams(BT=16, BK=32, BV=16, bwd_intra="fused", bwd_scratch="half", fused_per_sm=1))


@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_backward_fused(case: str) -> None:
    """The fused backward gives every gradient of the float64 recurrence (float32 within 1e-5),
    whether each program handles one chunk or several in turn."""
    problem, params = FUSED_CASES[case]
    tol = 1e-5 if problem.dtype == "float32" else GRAD_TOL[problem.dtype]
    _check(problem, params, seed=23, grads=True, tol=tol)


def test_fused_reuses_slots() -> None:
    """With fused_per_sm 1 the CPU run has 4 programs: fewer slots than chunks, so the slots are
    reused (the case the barriers are for) and the scratch is that small."""
    from kernel_variants.triton.chunk import _fused_programs

    assert _fused_programs(torch.device("cpu"), 2 * 2 * 3, 1) == 4
    assert _fused_programs(torch.device("cpu"), 3, 64) == 3


# segments > 1 (kernel_variants/triton/segmented.py): each sequence cut into pieces run in
# parallel and joined through their affine state maps [B | A]
SEGMENT_CASES = {
    # odd T, K != V, gate, initial and final state; 3 pieces of 2 chunks + a ragged one
    "odd-T-KneV": (Problem(B=2, T=77, H=2, K=16, V=24, dtype="float32", initial_state=True,
                           final_state=True, device=DEVICE),
                   TritonParams(BT=16, BK=16, BV=16, segments=4)),
    # varlen with uneven sequences (some shorter than a piece), no gate, l2norm, the W/U kernels
    "varlen-nogate-wu": (Problem(B=1, T=90, H=2, K=16, V=16, dtype="float32", gate=False, num_seqs=3,
                                 l2norm=True, initial_state=True, final_state=True, device=DEVICE),
                         TritonParams(BT=16, BK=16, BV=16, delta="wu", fuse_o=False, segments=2)),
    "no-state-bt32": (Problem(B=1, T=100, H=1, K=32, V=16, dtype="float32", device=DEVICE),
                      TritonParams(BT=32, BK=32, BV=16, segments=8)),
}


@pytest.mark.parametrize("case", list(SEGMENT_CASES))
def test_segments_forward(case: str) -> None:
    problem, params = SEGMENT_CASES[case]
    _check(problem, params, seed=21, grads=False, tol=1e-5)


def test_segments_backward() -> None:
    """Gradients flow through both passes and the join (initial state included)."""
    problem = Problem(B=2, T=53, H=2, K=16, V=24, dtype="float32", initial_state=True, final_state=True,
                      training=True, device=DEVICE)
    _check(problem, TritonParams(BT=16, BK=16, BV=16, segments=3), seed=22, grads=True, tol=1e-5)


SEGMENT_BWD_CASES = {
    # varlen: sequences of 1, 2 and 3 pieces (the exit-gradient loop's padded steps), no gate,
    # l2norm, the forward's W/U kernels, no final state
    "varlen-nogate-wu": (Problem(B=1, T=90, H=2, K=16, V=16, dtype="float32", gate=False, num_seqs=3,
                                 l2norm=True, initial_state=True, training=True, device=DEVICE),
                         TritonParams(BT=16, BK=16, BV=16, delta="wu", fuse_o=False, segments=3)),
    # the two-block intra backward; no initial state, a final state; BT 32
    "bt32-triton2": (Problem(B=1, T=150, H=1, K=32, V=16, dtype="float32", final_state=True, training=True,
                             device=DEVICE),
                     TritonParams(BT=32, BK=32, BV=16, segments=4, bwd_intra="triton2")),
    # a backward that cannot take the pieces as sequences: autograd through the three steps
    "torch-intra-autograd": (Problem(B=2, T=40, H=1, K=16, V=16, dtype="float32", initial_state=True,
                                     final_state=True, training=True, device=DEVICE),
                             TritonParams(BT=16, BK=16, BV=16, segments=2, bwd_intra="torch")),
}


@pytest.mark.parametrize("case", list(SEGMENT_BWD_CASES))
def test_segments_backward_cases(case: str) -> None:
    """Every gradient of the float64 recurrence through the segmented backward: one backward over
    the pieces with the exit gradients (kernel_variants.segments.exit_gradients), or autograd."""
    problem, params = SEGMENT_BWD_CASES[case]
    _check(problem, params, seed=24, grads=True, tol=1e-5)


def test_segments_backward_runs_once_over_the_pieces() -> None:
    """With a Triton intra-chunk backward, the segmented call is one autograd node (PiecesFunction: the
    backward over the pieces), not autograd through both passes."""
    problem = Problem(B=1, T=40, H=1, K=16, V=16, dtype="float32", training=True, device=DEVICE)
    inputs = make_inputs(problem, seed=5, device=DEVICE, requires_grad=True)
    o, _ = _run(inputs, TritonParams(BT=16, BK=16, BV=16, segments=2))
    assert "PiecesFunction" in type(o.grad_fn).__name__
    for kw in ({"bwd_intra": "torch"}, {"seg_bwd": "autograd"}):
        o, _ = _run(inputs, TritonParams(BT=16, BK=16, BV=16, segments=2, **kw))
        assert "PiecesFunction" not in type(o.grad_fn).__name__


def test_segment_bounds() -> None:
    from kernel_variants.triton.segmented import segment_bounds

    # 77 tokens, BT 16: 5 chunks over 4 pieces -> pieces of 2 chunks (32 tokens): 32, 32, 13
    assert segment_bounds((0, 77, 154), 4, 16) == ((0, 32, 64, 77, 109, 141, 154), [3, 3])
    # an empty sequence keeps one empty piece; a short one is one piece
    assert segment_bounds((0, 0, 10, 50), 2, 16) == ((0, 0, 10, 42, 50), [1, 1, 2])


def test_default_segments_follow_the_problem() -> None:
    """The default cuts sequences only where few programs run (S2, S4), and a partial config gets
    the problem's default for what it leaves out."""
    backend = TritonBackend()

    def seg(**kw: Any) -> int:
        problem = Problem(**{"dtype": "bfloat16", "device": "cuda", "K": 128, "V": 128, **kw})
        return int(backend.default_config(problem)["segments"])

    assert seg(B=8, T=4096, H=16) == 1       # S1: 256 programs
    assert seg(B=2, T=16384, H=16) == 4      # S2: 64 programs
    assert seg(B=1, T=32768, H=8) == 16      # S4: 16 programs
    assert seg(B=1, T=2048, H=8) == 1        # short: not worth it
    assert seg(B=1, T=65536, H=16, num_seqs=16) == 1  # V1: 512 programs
    assert seg(B=1, T=32768, H=8, training=True) == 16  # S4 training: measured faster cut
    assert seg(B=2, T=16384, H=16, training=True) == 4  # S2 training: faster cut (run 41)
    problem = Problem(B=1, T=32768, H=8, K=128, V=128, dtype="bfloat16", device="cuda")
    assert backend.resolve_config(problem, {"BT": 32})["segments"] == 16
    assert backend.resolve_config(problem, {"segments": 1})["segments"] == 1


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_bf16_segments_forward_backward() -> None:
    """segments on the GPU: 16-bit dots in both passes, every gradient through the join."""
    problem = Problem(B=1, T=2000, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    _check(problem, TritonParams(segments=8), seed=23, grads=True, tol=2e-2)


@pytest.mark.parametrize("dtype,tol", [("bfloat16", 2e-2), ("float16", 1e-3)])
def test_backward_half_scratch(dtype: str, tol: float) -> None:
    """bwd_scratch "half": the per-chunk gradients between the grad and intra kernels in the 16-bit
    input dtype. Every gradient still matches the float64 reference (looser than fp32 scratch in
    bf16: about 1.4x the error at this shape), and the switch does change what runs."""
    problem = Problem(B=1, T=70, H=2, K=32, V=48, dtype=dtype, initial_state=True, final_state=True,
                      training=True, device=DEVICE)
    params = TritonParams(BT=16, BK=32, BV=16, bwd_scratch="half")
    _check(problem, params, seed=3, grads=True, tol=tol)
    grads = []
    for p in (params, TritonParams(BT=16, BK=32, BV=16)):
        inputs = make_inputs(problem, seed=3, device=DEVICE, requires_grad=True)
        o, _ = _run(inputs, p)
        grads.append(torch.autograd.grad(o.float().sum(), inputs["k"])[0])
    assert not torch.equal(grads[0], grads[1])


def test_backward_per_kernel_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The split backward's per-kernel overrides (V tiles of the dS, grad and intra kernels other
    than the config's BV, their own warps and stages, the intra kernel's register cap, the W/U
    recompute's warps): every gradient matches the reference, and the V tiles, warps and cap asked
    for are what the kernels were launched with."""
    from kernel_variants.triton import chunk_bwd, chunk_fwd

    problem = Problem(B=1, T=50, H=2, K=32, V=48, dtype="float32", initial_state=True, final_state=True,
                      training=True, device=DEVICE)
    params = TritonParams(BT=16, BK=32, BV=64, bv_dh=16, bv_grad=32, stages_grad=1, bv_intra=16,
                          warps_dh=2, warps_grad=8, warps_intra=1, stages_dh=1, stages_intra=1, bk_intra=16,
                          maxnreg_intra=128, warps_wu=1)
    seen: dict[str, set[int]] = {}
    wrapped = {n: getattr(chunk_bwd, n) for n in ("eda_bwd_dh_kernel", "eda_bwd_grad_kernel",
                                                    "eda_bwd_intra_kernel")}
    wrapped["eda_fwd_wu_kernel"] = chunk_fwd.eda_fwd_wu_kernel

    class Spy:
        def __init__(self, name: str) -> None:
            self.name = name

        def __getitem__(self, grid: Any) -> Any:
            def launch(*args: Any, **kw: Any) -> Any:
                what = {"eda_bwd_intra_kernel": lambda: (kw["BK"], kw["BV"], kw["num_warps"], kw["maxnreg"]),
                        "eda_fwd_wu_kernel": lambda: kw["num_warps"]}.get(self.name, lambda: kw["BV"])()
                seen.setdefault(self.name, set()).add(what)
                return wrapped[self.name][grid](*args, **kw)
            return launch

    from kernel_variants.triton import chunk as chunk_mod
    for n in wrapped:
        monkeypatch.setattr(chunk_mod, n, Spy(n))
    _check(problem, params, seed=5, grads=True, tol=5e-3)
    assert seen == {"eda_bwd_dh_kernel": {16}, "eda_bwd_grad_kernel": {32},
                    "eda_bwd_intra_kernel": {(16, 16, 1, 128)}, "eda_fwd_wu_kernel": {1}}


@pytest.mark.parametrize("case", ["k-tiles", "one-tile-varlen-nogate", "pieces-half", "k-ragged"])
def test_backward_k_tiled_grad(case: str) -> None:
    """``bk_grad`` > 0: the per-chunk gradients over K tiles, Delta from the states recompute (in
    place of U) and dDelta from the dS scan. Every gradient against the float64 reference: K split
    in tiles (ddec summed over them), one tile with varlen and no gate, over pieces (only the
    second dS scan stores dDelta) with 16-bit scratch, and a K that is no multiple of the tile."""
    problem = {
        "k-tiles": Problem(B=2, T=45, H=2, K=64, V=40, dtype="float32", initial_state=True, final_state=True,
                           training=True, device=DEVICE),
        "one-tile-varlen-nogate": Problem(B=1, T=60, H=2, K=32, V=32, dtype="float32", gate=False, num_seqs=3,
                                          initial_state=True, final_state=True, training=True, device=DEVICE),
        "pieces-half": Problem(B=1, T=96, H=1, K=32, V=32, dtype="bfloat16", initial_state=True,
                               final_state=True, training=True, device=DEVICE),
        "k-ragged": Problem(B=1, T=40, H=2, K=40, V=24, dtype="float32", final_state=True, training=True,
                            device=DEVICE),
    }[case]
    params = {
        "k-tiles": TritonParams(BT=16, BK=32, BV=16, bk_grad=32, bv_grad=16),
        "one-tile-varlen-nogate": TritonParams(BT=16, BK=32, BV=32, bk_grad=32),
        "pieces-half": TritonParams(BT=16, BK=32, BV=32, bk_grad=16, segments=2, bwd_scratch="half"),
        "k-ragged": TritonParams(BT=16, BK=32, BV=16, bk_grad=16),
    }[case]
    _check(problem, params, seed=41, grads=True, tol=2e-2 if problem.dtype == "bfloat16" else 1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("K,bk", [(128, 64), (256, 64), (128, 128)])
def test_gpu_bf16_k_tiled_grad(K: int, bk: int) -> None:
    problem = Problem(B=2, T=300, H=4, K=K, V=K, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    _check(problem, TritonParams(BV=32 if K == 256 else 64, bk_grad=bk), seed=26, grads=True, tol=2e-2)


def test_scratch_override_reaches_the_buffers() -> None:
    """``scratch_override`` (benchmarks/scratch_precision.py) changes the dtype of the backward's
    stored W: in float32 the initial state's gradient of a bf16 problem gets closer to the float64
    reference (under the interpreter the dots are float32, so W's storage is its only rounding)."""
    from kernel_variants.triton.chunk import scratch_override

    problem = Problem(B=1, T=96, H=1, K=32, V=32, dtype="bfloat16", initial_state=True, final_state=True,
                      training=True, device=DEVICE)
    inputs = make_inputs(problem, seed=2, device=DEVICE, requires_grad=True)
    grads = []
    for names in ((), ("w",)):
        x = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.requires_grad else v)
             for k, v in inputs.items()}
        with scratch_override(names):
            o, _ = _run(x, TritonParams(BT=16, BK=32, BV=32))
            grads.append(torch.autograd.grad(o.float().sum(), x["initial_state"])[0])
    up = upcast(inputs)
    want = torch.autograd.grad(naive_recurrent_eda(**up)[0].sum(), up["initial_state"])[0]
    half, full = (rel_error(gr, want) for gr in grads)
    assert full < 0.9 * half, (half, full)
    from kernel_variants.triton.chunk import SCRATCH_OVERRIDE

    with scratch_override({"u": torch.bfloat16, "w": torch.float32}):  # a dtype per buffer
        assert SCRATCH_OVERRIDE == {"u": torch.bfloat16, "w": torch.float32}
    assert SCRATCH_OVERRIDE == {}


def test_u_scratch_is_float32_unless_half() -> None:
    """The backward stores U in float32 (Delta = U - W S cancels, so U's 16-bit rounding reached
    dg and dq): a bf16 problem's dg is closer to the float64 reference than with U forced to bf16,
    and ``bwd_scratch: half`` keeps U in bf16 (its gradient equals the forced one's)."""
    from kernel_variants.triton.chunk import scratch_override

    problem = Problem(B=1, T=80, H=1, K=32, V=48, dtype="bfloat16", initial_state=True, final_state=True,
                      training=True, device=DEVICE)
    inputs = make_inputs(problem, seed=5, device=DEVICE, requires_grad=True)
    runs = (((), {}), (("u",), {}), ((), {"bwd_scratch": "half"}), (("u",), {"bwd_scratch": "half"}))
    dgs = []
    for names, kw in runs:
        x = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.requires_grad else v)
             for k, v in inputs.items()}
        with scratch_override(names, torch.bfloat16):
            o, _ = _run(x, TritonParams(BT=16, BK=32, BV=32, **kw))
            dgs.append(torch.autograd.grad(o.float().sum(), x["g"])[0])
    up = upcast(inputs)
    want = torch.autograd.grad(naive_recurrent_eda(**up)[0].sum(), up["g"])[0]
    full, half = rel_error(dgs[0], want), rel_error(dgs[1], want)
    assert full < 0.9 * half, (full, half)
    assert torch.equal(dgs[2], dgs[3])


def test_training_default_takes_k_tiled_grad() -> None:
    """The backend's default for training runs the per-chunk gradients over K tiles (K whole up
    to K = 128, else tiles of 128); a forward call keeps the space's pinned 0 (the tunable does not matter
    there)."""
    backend = TritonBackend()
    fwd = Problem(B=2, T=256, H=4, K=128, V=128, dtype="bfloat16", device=DEVICE)
    train = dataclasses.replace(fwd, training=True)
    assert backend.default_config(train)["bk_grad"] == 128
    assert backend.default_config(dataclasses.replace(train, K=256, V=256))["bk_grad"] == 128
    assert backend.default_config(dataclasses.replace(train, K=64, V=64))["bk_grad"] == 64
    assert backend.default_config(fwd)["bk_grad"] == 0
    assert TritonParams.from_config(backend.default_config(train)).bk_grad == 128


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("scratch", ["fp32", "half"])
def test_gpu_bf16_intra_half_dots(scratch: str) -> None:
    problem = Problem(B=2, T=300, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    _check(problem, TritonParams(intra_dots="half", bwd_scratch=scratch, bk_grad=64), seed=27, grads=True,
           tol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_bf16_half_scratch() -> None:
    problem = Problem(B=2, T=300, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    _check(problem, TritonParams(bwd_scratch="half"), seed=24, grads=True, tol=2e-2)


@pytest.mark.parametrize("dh_dots", ["mixed", "input", "kd_rows", "qg_tf32", "a_tf32"])
@pytest.mark.parametrize("gate", [True, False])
def test_dh_dots_operands(dh_dots: str, gate: bool) -> None:
    """Every operand choice of the dS scan (``dh_dots``; "mixed", the default, applies the decay to
    the rows of Kd dS after the dot) gives every gradient of the float64 recurrence, with and
    without the gate, with an initial and a final state, K != V and a ragged last chunk."""
    problem = Problem(B=1, T=45, H=2, K=32, V=16, dtype="float32", gate=gate, initial_state=True,
                      final_state=True, training=True, device=DEVICE)
    _check(problem, TritonParams(BT=16, BK=32, BV=16, dh_dots=dh_dots), seed=31, grads=True, tol=2e-3)


def test_dh_dots_rejects_unknown() -> None:
    problem = Problem(B=1, T=20, H=1, K=16, V=16, dtype="float32", training=True, device=DEVICE)
    with pytest.raises(ValueError, match="dh_dots"):
        _check(problem, TritonParams(BT=16, BK=16, BV=16, dh_dots="bf16"), seed=1, grads=True, tol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_bf16_dh_dots_initial_state_error() -> None:
    """On a GPU (16-bit dots) the default "mixed" operands of the dS scan take the initial state's
    gradient closer to the float64 recurrence than 16-bit operands throughout ("input")."""
    problem = Problem(B=2, T=2048, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    inputs = make_inputs(problem, seed=7, device="cuda", requires_grad=True)
    up = upcast(inputs)
    want = torch.autograd.grad(naive_recurrent_eda(**up)[0].sum(), up["initial_state"])[0]
    errs = {}
    for dots in ("mixed", "input"):
        x = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.requires_grad else v)
             for k, v in inputs.items()}
        o, _ = _run(x, TritonParams(dh_dots=dots, bk_grad=128))
        errs[dots] = rel_error(torch.autograd.grad(o.float().sum(), x["initial_state"])[0], want)
    assert errs["mixed"] < 0.9 * errs["input"], errs


def test_warps_grad_is_a_training_tunable() -> None:
    """``warps_grad`` (the per-chunk gradient kernel's warps; 0: warps_bwd) reaches the kernel
    parameters, and the space admits 8 only for the split backward when training."""
    backend = TritonBackend()
    fwd = Problem(B=4, T=4096, H=8, K=256, V=256, dtype="bfloat16", device="cuda")
    train = fwd.replace(training=True)
    cfg = {**backend.default_config(train).to_dict(), "warps_grad": 8}
    assert backend.check_config(train, cfg)[0]
    assert not backend.check_config(fwd, cfg)[0]
    assert not backend.check_config(train, {**cfg, "bwd_intra": "fused"})[0]
    assert TritonParams.from_config(backend.resolve_config(train, cfg)).warps_grad == 8
    assert TritonParams.from_config(backend.default_config(train)).warps_grad == 0


BWD_TM_CASES = {
    # gate, initial and final state, K != V, a ragged last chunk
    "gated": (Problem(B=2, T=45, H=2, K=32, V=16, dtype="float32", initial_state=True, final_state=True,
                      training=True, device=DEVICE), {}),
    # varlen without the gate, l2norm, BT 32
    "varlen-nogate-bt32": (Problem(B=1, T=90, H=2, K=16, V=24, dtype="float32", gate=False, num_seqs=3,
                                   l2norm=True, initial_state=True, training=True, device=DEVICE), {"BT": 32}),
    # the pieces: the backward over them reads the pieces' chunk inverse
    "pieces": (Problem(B=2, T=53, H=2, K=16, V=24, dtype="float32", initial_state=True, final_state=True,
                       training=True, device=DEVICE), {"segments": 3}),
}


@pytest.mark.parametrize("bwd_tm", ["wu", "recompute"])
@pytest.mark.parametrize("case", list(BWD_TM_CASES))
def test_bwd_tm_reads_the_forward_inverse(case: str, bwd_tm: str) -> None:
    """``bwd_tm``: the backward's W/U recompute takes the forward's chunk inverse ("wu", the
    default) or inverts again, and every gradient matches the float64 recurrence either way."""
    problem, kw = BWD_TM_CASES[case]
    _check(problem, TritonParams(**{"BT": 16, "BK": 32, "BV": 16, **kw}, bwd_tm=bwd_tm), seed=41, grads=True,
           tol=1e-5)


def test_bwd_tm_kept_then_freed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training forward keeps its Tm (in the input's 16-bit dtype), the backward's W/U
    recompute reads it (a Tm scaled between forward and backward changes the gradients, but not
    those of ``bwd_tm: recompute``) and lets it go (the kept dict is empty afterwards); a forward
    without gradients keeps none."""
    from kernel_variants.triton import chunk as chunk_mod

    seen: dict[str, set[bool]] = {}

    class Spy:
        def __init__(self, name: str) -> None:
            self.name, self.kernel = name, getattr(chunk_mod, name)

        def __getitem__(self, grid: Any) -> Any:
            def launch(*args: Any, **kw: Any) -> Any:
                seen.setdefault(self.name, set()).add(bool(kw.get("USE_TM")))
                return self.kernel[grid](*args, **kw)
            return launch

    monkeypatch.setattr(chunk_mod, "eda_fwd_wu_kernel", Spy("eda_fwd_wu_kernel"))
    problem = Problem(B=1, T=40, H=2, K=16, V=16, dtype="bfloat16", initial_state=True, training=True,
                      device=DEVICE)
    inputs = make_inputs(problem, seed=8, device=DEVICE, requires_grad=True)
    names = [n for n in NAMES if isinstance(inputs[n], torch.Tensor)]

    def grads(params: TritonParams, scale_tm: float) -> list[torch.Tensor]:
        x = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.requires_grad else v)
             for k, v in inputs.items()}
        o, _ = _run(x, params)
        kept = o.grad_fn.tm_cache
        if params.bwd_tm == "recompute":
            assert kept is None
        else:
            assert kept["tm"].dtype == torch.bfloat16
            kept["tm"].mul_(scale_tm)
        out = torch.autograd.grad(o.sum(), [x[n] for n in names])
        assert kept is None or not kept
        return list(out)

    p = TritonParams(BT=16, BK=16, BV=16)
    assert p.bwd_tm == "wu"
    moved = [rel_error(a, b) for a, b in zip(grads(p, 0.5), grads(p, 1.0))]
    assert max(moved) > 1e-2, moved
    assert seen == {"eda_fwd_wu_kernel": {True}}, seen
    r = dataclasses.replace(p, bwd_tm="recompute")
    assert max(rel_error(a, b) for a, b in zip(grads(r, 0.5), grads(r, 1.0))) == 0.0
    assert seen == {"eda_fwd_wu_kernel": {True, False}}, seen
    with torch.no_grad():
        o, _ = _run(inputs, p)
    assert o.grad_fn is None


def test_bwd_tm_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="bwd_tm"):
        TritonParams(bwd_tm="keep")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("bwd_tm", ["wu", "recompute"])
def test_gpu_bf16_bwd_tm(bwd_tm: str) -> None:
    problem = Problem(B=2, T=300, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    _check(problem, TritonParams(bwd_tm=bwd_tm, bk_grad=128), seed=29, grads=True, tol=2e-2)


def test_bwd_tm_second_backward_recomputes() -> None:
    """With ``retain_graph`` the second backward finds the kept Tm gone and inverts again: both
    give the gradients of ``bwd_tm: recompute``."""
    problem = Problem(B=1, T=40, H=2, K=16, V=16, dtype="float32", initial_state=True, training=True,
                      device=DEVICE)
    inputs = make_inputs(problem, seed=9, device=DEVICE, requires_grad=True)
    o, _ = _run(inputs, TritonParams(BT=16, BK=16, BV=16))
    first = torch.autograd.grad(o.sum(), inputs["q"], retain_graph=True)[0]
    assert not o.grad_fn.tm_cache
    second = torch.autograd.grad(o.sum(), inputs["q"])[0]
    o2, _ = _run(inputs, TritonParams(BT=16, BK=16, BV=16, bwd_tm="recompute"))
    want = torch.autograd.grad(o2.sum(), inputs["q"])[0]
    assert rel_error(first, want) < 1e-6 and rel_error(second, want) < 1e-6


PAIRS_CASES = {
    # odd number of chunks (the last chunk lone in its pair), gate, initial and final state, K != V
    "gated-odd": (Problem(B=2, T=75, H=2, K=32, V=16, dtype="float32", initial_state=True, final_state=True,
                          training=True, device=DEVICE), {}),
    # varlen: sequences of 1, 2 and more chunks, no gate; K tiles of 16
    "varlen-nogate": (Problem(B=1, T=120, H=2, K=32, V=24, dtype="float32", gate=False, num_seqs=4,
                              initial_state=True, final_state=True, training=True, device=DEVICE), {"bk_grad": 16}),
    # the pieces (the second dS scan stores the pairs)
    "pieces": (Problem(B=1, T=130, H=2, K=16, V=16, dtype="float32", initial_state=True, final_state=True,
                       training=True, device=DEVICE), {"segments": 3}),
    # the 16-bit operands of the dS scan throughout, mirrored by the rebuild
    "dh-input": (Problem(B=1, T=64, H=1, K=16, V=16, dtype="float32", final_state=True, training=True,
                         device=DEVICE), {"dh_dots": "input"}),
}


@pytest.mark.parametrize("case", list(PAIRS_CASES))
def test_bwd_states_pairs(case: str) -> None:
    """``bwd_states: pairs``: every gradient of the float64 recurrence with states and state
    gradients kept for every other chunk and the others rebuilt in the per-chunk gradient kernel."""
    problem, kw = PAIRS_CASES[case]
    params = TritonParams(**{"BT": 16, "BK": 32, "BV": 16, "bk_grad": 32, **kw}, bwd_states="pairs")
    _check(problem, params, seed=43, grads=True, tol=1e-5)


def test_bwd_states_pairs_halves_the_state_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The states and state gradients get one slot per pair of chunks (T = 75, BT 16: 5 chunks,
    3 slots a head), and the gradients equal those of "every" (so the rebuilt halves are right)."""
    from kernel_variants.triton import chunk as chunk_mod

    shapes: list[tuple[int, ...]] = []
    kernel = chunk_mod.eda_bwd_gradk_kernel

    class Spy:
        def __getitem__(self, grid: Any) -> Any:
            def launch(*args: Any, **kw: Any) -> Any:
                shapes.append(tuple(args[0].shape))
                return kernel[grid](*args, **kw)
            return launch

    monkeypatch.setattr(chunk_mod, "eda_bwd_gradk_kernel", Spy())
    problem = Problem(B=1, T=75, H=2, K=16, V=16, dtype="float32", initial_state=True, training=True,
                      device=DEVICE)
    inputs = make_inputs(problem, seed=3, device=DEVICE, requires_grad=True)
    names = [n for n in NAMES if isinstance(inputs[n], torch.Tensor)]
    got = {}
    for states in ("every", "pairs"):
        o, _ = _run(inputs, TritonParams(BT=16, BK=16, BV=16, bk_grad=16, bwd_states=states))
        got[states] = torch.autograd.grad(o.sum(), [inputs[n] for n in names])
    assert shapes == [(1, 2, 5, 16, 16), (1, 2, 3, 16, 16)], shapes
    for a, b in zip(got["every"], got["pairs"]):
        assert rel_error(b, a) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_bf16_bwd_states_pairs() -> None:
    problem = Problem(B=2, T=300, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    _check(problem, TritonParams(bwd_states="pairs", bk_grad=128), seed=30, grads=True, tol=2e-2)


def test_bwd_states_is_a_training_tunable() -> None:
    """``bwd_states`` is in the search space for training with the K-tiled gradient kernel only,
    and a config's value reaches TritonParams (older configs without it complete to "every")."""
    backend = TritonBackend()
    fwd = Problem(B=2, T=256, H=4, K=256, V=256, dtype="bfloat16", device=DEVICE)
    train = dataclasses.replace(fwd, training=True)
    cfg = backend.default_config(train).to_dict()
    assert cfg["bwd_states"] == "every"
    assert backend.check_config(train, {**cfg, "bwd_states": "pairs"})[0]
    assert not backend.check_config(train, {**cfg, "bwd_states": "pairs", "bk_grad": 0})[0]
    assert not backend.check_config(fwd, {**backend.default_config(fwd).to_dict(), "bwd_states": "pairs"})[0]
    assert TritonParams.from_config(backend.resolve_config(train, {"bwd_states": "pairs"})).bwd_states == "pairs"
    old = {k: v for k, v in cfg.items() if k != "bwd_states"}
    assert TritonParams.from_config(backend.resolve_config(train, old)).bwd_states == "every"


def test_bwd_h_default_and_space() -> None:
    """``bwd_h``: the backend's training default is "tm_dh" at K > 128 and "tm" at K <= 128; a
    forward call pins "tm"; "tm_dh" with ``bwd_states: pairs`` is admitted (it runs as "tm")."""
    backend = TritonBackend()
    for K, want in ((256, "tm_dh"), (128, "tm"), (64, "tm")):
        fwd = Problem(B=2, T=256, H=4, K=K, V=K, dtype="bfloat16", device=DEVICE)
        train = dataclasses.replace(fwd, training=True)
        assert backend.default_config(train)["bwd_h"] == want
        assert backend.default_config(fwd)["bwd_h"] == "tm"
        assert not backend.check_config(fwd, {**backend.default_config(fwd).to_dict(), "bwd_h": "tm_dh"})[0]
    cfg = backend.resolve_config(train, {"bwd_states": "pairs", "bwd_h": "tm_dh"})
    assert TritonParams.from_config(cfg).bwd_h == "tm_dh"
    assert not backend.check_config(train, {**cfg.to_dict(), "bk_grad": 0})[0]


TM_CASES = {
    # gate, a ragged last chunk, K tiles of 16 over K = 40
    "gated-ragged": (Problem(B=2, T=45, H=2, K=40, V=16, dtype="float32", device=DEVICE), 16),
    # varlen without gate, BT 32 (one-chunk and one-token sequences)
    "varlen-nogate": (Problem(B=1, T=70, H=1, K=16, V=16, dtype="float32", gate=False, num_seqs=4,
                              device=DEVICE), 32),
}


def _chunk_inverse_f64(inputs: dict, BT: int) -> torch.Tensor:
    """(I + A)^-1 of every chunk in float64 from its definition (EDA_MATH.md), erase-first order:
    rows and columns [0, BT) the erase rows of the chunk's tokens, [BT, 2BT) the write rows;
    [B, H, NC, 2BT, 2BT], chunked as the torch backend does (``chunk_layout``: each sequence
    zero-padded to whole chunks)."""
    from kernel_variants.torch_chunk.chunk import chunk_layout

    up = upcast(inputs)
    cu = inputs["cu_seqlens"]
    layout = chunk_layout(up["k"].shape[1], BT, tuple(cu.tolist()) if cu is not None else None, "cpu")

    def chunked(name: str) -> torch.Tensor:  # [B, T, H, ...] -> [B, H, NC, BT, ...]
        return layout.chunked(up[name].transpose(1, 2).cpu())
    kap = torch.cat((chunked("e"), chunked("k")), dim=-2)
    strength = torch.cat((chunked("gamma"), chunked("beta")), dim=-1)
    G = chunked("g").cumsum(-1) if up["g"] is not None else torch.zeros_like(chunked("beta"))
    G = torch.cat((G, G), dim=-1)
    rows = torch.arange(2 * BT)
    pos = 2 * (rows % BT) + (rows >= BT).long()
    before = pos[:, None] > pos[None, :]
    decay = torch.where(before, G[..., :, None] - G[..., None, :], -math.inf).exp()
    A = strength[..., :, None] * (kap @ kap.transpose(-1, -2)) * decay
    return torch.linalg.inv(torch.eye(2 * BT, dtype=torch.float64) + A)


@pytest.mark.parametrize("case", list(TM_CASES))
@pytest.mark.parametrize("solver", ["doubling", "blocks"])
def test_tm_solver_gives_the_chunk_inverse(case: str, solver: str) -> None:
    """Both ways of inverting I + A in the forward's chunk kernel store the float64 inverse of
    every chunk (the tensor itself, not only what the state kernel makes of it)."""
    from kernel_variants.triton.chunk import chunk_eda_fwd

    problem, BT = TM_CASES[case]
    inputs = make_inputs(problem, seed=21, device=DEVICE)
    K = problem.K
    cache: dict[str, torch.Tensor] = {}
    chunk_eda_fwd(inputs["q"], inputs["k"], inputs["v"], inputs["e"], inputs["g"], inputs["beta"],
                  inputs["gamma"], K ** -0.5, None, False, inputs["cu_seqlens"],
                  tuple(inputs["cu_seqlens"].tolist()) if inputs["cu_seqlens"] is not None else None,
                  TritonParams(BT=BT, BK=16, BV=16, tm_solver=solver), tm_cache=cache)
    tm = cache["tm"]
    # [B, H, NC, NR, NR] both (varlen: B = 1, the chunks of every sequence in order)
    want = _chunk_inverse_f64(inputs, BT).reshape(-1, 2 * BT, 2 * BT)
    got = tm.cpu().reshape(-1, 2 * BT, 2 * BT)
    assert got.shape == want.shape
    # the interpreter's float32 dots are exact to rounding; a GPU's tf32 dots keep 10 bits
    assert rel_error(got, want) < (1e-5 if DEVICE == "cpu" else 3e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("solver", ["doubling", "blocks"])
def test_gpu_bf16_tm_solver(solver: str) -> None:
    """Both solvers at K = V = 128 in bf16, forward and every gradient (the backward reads the
    forward's chunk inverse)."""
    problem = Problem(B=2, T=300, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    _check(problem, TritonParams(tm_solver=solver, bk_grad=128), seed=31, grads=True, tol=2e-2)


def test_tm_solver_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="tm_solver"):
        TritonParams(tm_solver="lu")


BWD_PREFETCH_CASES = {
    # gate, initial and final state, K != V, a ragged last chunk, K whole in the gradient kernel
    "gated-ragged": (Problem(B=2, T=45, H=2, K=24, V=40, dtype="float32", initial_state=True, final_state=True,
                             training=True, device=DEVICE), {}),
    # varlen with one-chunk sequences, no gate, K tiles in the gradient kernel (the states recompute
    # writes Delta over U while it reads U ahead)
    "varlen-nogate-ktiled": (Problem(B=1, T=120, H=2, K=32, V=24, dtype="float32", gate=False, num_seqs=4,
                                     initial_state=True, final_state=True, training=True, device=DEVICE),
                             {"bk_grad": 16}),
    # states for every other chunk (the scans store half the slots)
    "pairs": (Problem(B=1, T=75, H=2, K=32, V=16, dtype="float32", initial_state=True, final_state=True,
                      training=True, device=DEVICE), {"bk_grad": 32, "bwd_states": "pairs"}),
    # the pieces (two dS scans, the first storing nothing)
    "pieces": (Problem(B=1, T=130, H=2, K=16, V=16, dtype="float32", initial_state=True, final_state=True,
                       training=True, device=DEVICE), {"segments": 3}),
}


@pytest.mark.parametrize("case", list(BWD_PREFETCH_CASES))
@pytest.mark.parametrize("prefetch", [False, True])
def test_bwd_prefetch(case: str, prefetch: bool) -> None:
    """``bwd_prefetch`` (the default) and without: the backward's dS scan loading the inputs of the
    chunk before it ahead, or each in its own step, gives every gradient of the float64 recurrence
    (with the states recomputed from W and U, ``bwd_h: wu``)."""
    problem, kw = BWD_PREFETCH_CASES[case]
    params = TritonParams(**{"BT": 16, "BK": 32, "BV": 16, **kw}, bwd_prefetch=prefetch, bwd_h="wu")
    _check(problem, params, seed=47, grads=True, tol=1e-5)


@pytest.mark.parametrize("case", list(BWD_PREFETCH_CASES))
@pytest.mark.parametrize("bwd_h,h_prefetch,bwd_prefetch", [("tm", False, True), ("tm", True, True),
                                                           ("tm_dh", True, True), ("tm_dh", True, False),
                                                           ("tm_dhp", True, True), ("tm_dhp", True, False)])
def test_bwd_h_tm(case: str, bwd_h: str, h_prefetch: bool, bwd_prefetch: bool) -> None:
    """``bwd_h: tm`` (the default): the backward's states and Delta recomputed by the forward's state
    kernel from the kept chunk inverse (with and without its loading ahead); ``tm_dh``: the dS scan
    forming W^T dDelta from it too (with and without the scan's loading ahead); ``tm_dhp``: that
    product's parts formed off the step's chain. Every gradient of
    the float64 recurrence; K tiles of the gradient kernel, pairs of states (which keep W) and the
    pieces (two dS scans) included."""
    problem, kw = BWD_PREFETCH_CASES[case]
    kw = {"bk_grad": 16, **kw}  # the path needs Delta stored: the K-tiled per-chunk gradients
    params = TritonParams(**{"BT": 16, "BK": 32, "BV": 16, **kw}, bwd_h=bwd_h, h_prefetch=h_prefetch,
                          bwd_prefetch=bwd_prefetch)
    _check(problem, params, seed=48, grads=True, tol=1e-5)


def test_dh_prefetch_only_with_chunks_of_16() -> None:
    """The dS scan loads ahead only at BT 16: at BT 32 triton 3.6's build of it gave wrong
    gradients on an H200 (run 77), so longer chunks run the scan without it."""
    from kernel_variants.triton.chunk import dh_prefetch

    assert dh_prefetch(TritonParams(BT=16))
    assert not dh_prefetch(TritonParams(BT=16, bwd_prefetch=False))
    assert not dh_prefetch(TritonParams(BT=32))
    assert not dh_prefetch(TritonParams(BT=64))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("bk_grad", [0, 128])
def test_gpu_bf16_backward_bt32(bk_grad: int) -> None:
    """Chunks of 32 in training (the S2+bwd class's tuned config with bk_grad 0): every gradient
    within bf16 error; with the dS scan loading ahead at BT 32 they were 0.19 off (run 77)."""
    problem = Problem(B=1, T=1000, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    params = TritonParams(BT=32, BK=64, BV=32, fuse_o=False, num_warps=4, bk_grad=bk_grad)
    _check(problem, params, seed=33, grads=True, tol=2e-2)


def test_bwd_h_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="bwd_h"):
        TritonParams(bwd_h="u")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_bf16_bwd_prefetch() -> None:
    problem = Problem(B=2, T=300, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    _check(problem, TritonParams(bwd_prefetch=True, bk_grad=128), seed=32, grads=True, tol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("pairs", [False, True])
def test_gpu_bf16_bwd_h_tm(pairs: bool) -> None:
    problem = Problem(B=2, T=300, H=4, K=128, V=128, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda")
    params = TritonParams(bwd_h="tm", bk_grad=128, bwd_states="pairs" if pairs else "every")
    _check(problem, params, seed=33, grads=True, tol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("varlen", [False, True])
def test_gpu_bf16_bwd_h_tm_dh(varlen: bool) -> None:
    problem = Problem(B=1 if varlen else 2, T=300, H=4, K=128, V=100, dtype="bfloat16", initial_state=True,
                      final_state=True, training=True, device="cuda", num_seqs=3 if varlen else 0)
    _check(problem, TritonParams(bwd_h="tm_dh", bk_grad=128), seed=34, grads=True, tol=2e-2)


def test_config_probe_reports_each_variant(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/gpu_config_probe.py (what found the BT 32 defect, H200 run 77) runs here under the
    interpreter: one row a variant, each with the overrides applied to the config and every output
    and gradient checked against the float64 reference."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "gpu_config_probe", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_config_probe.py"))
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setenv("PROBE_PROBLEMS", "1:40:2:32:32")
    monkeypatch.setenv("PROBE_CONFIG", json.dumps({"BT": 16, "BK": 32, "BV": 16}))
    monkeypatch.setenv("PROBE_VARIANTS", json.dumps({"bk16": {"bk_intra": 16}, "nopre": {"bwd_prefetch": False}}))
    probe.main()
    rows = json.loads((tmp_path / "probe.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["base", "bk16", "nopre"]
    assert all(r["ok"] and set(r["errors"]) >= {"o", "dq", "dk", "dv", "de"} for r in rows)
    assert rows[1]["params"]["bk_intra"] == 16 and rows[2]["params"]["bwd_prefetch"] is False
