"""Launchers and the autograd Function of the Triton EDA chunk kernels.

Forward: three Triton kernels (``chunk_fwd``): W/U per chunk, the state recurrence, the output
(or two, with ``fuse_o``: the recurrence also writes the output).

Backward (``bwd_intra``):
- ``triton`` (default): recompute W, U and the chunk states with the forward kernels, run the
  state recurrence backwards (``chunk_bwd.eda_bwd_h_kernel``), then the intra-chunk backward
  kernel (``chunk_bwd.eda_bwd_intra_kernel``) gives dq, dk, dv, de, dg, dbeta, dgamma.
- ``triton2``: the same, with ``chunk_bwd.eda_bwd_intra2_kernel`` for the intra-chunk part (two
  BT-row blocks and inverse by squaring of the diagonal blocks, as the forward W/U kernel).
- ``fused``: as ``triton``, with the per-chunk gradient kernel and the intra-chunk kernel in one
  persistent kernel (``chunk_bwd.eda_bwd_fused_kernel``): the per-chunk gradients between them
  live in one scratch slot per program instead of one per chunk.
- ``torch``: the intra-chunk quantities (W, U, Qg, Aqk, Kd, chunk decay) are recomputed in
  PyTorch (batched over all chunks) with autograd; the recurrence's backward is the same Triton
  kernel; autograd of the recompute maps its gradients to the inputs'.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from eda_tune.inputs import l2norm
from kernel_variants.torch_chunk.chunk import chunk_layout
from kernel_variants.torch_chunk.chunk import intra as torch_intra
from kernel_variants.triton.chunk_bwd import (
    eda_bwd_dh_kernel,
    eda_bwd_fused_kernel,
    eda_bwd_grad_kernel,
    eda_bwd_gradk_kernel,
    eda_bwd_h_kernel,
    eda_bwd_intra2_kernel,
    eda_bwd_intra_kernel,
)
from kernel_variants.triton.chunk_fwd import (
    eda_fwd_h2_kernel,
    eda_fwd_h_kernel,
    eda_fwd_o_kernel,
    eda_fwd_tm_kernel,
    eda_fwd_wu_kernel,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TritonParams:
    """The tunables of one build (search_spaces/triton.yaml)."""

    BT: int = 16
    BK: int = 64
    BV: int = 64
    num_warps: int = 1
    num_stages: int = 2
    warps_h: int = 4
    precision: str = "tf32"
    bwd_solver: str = "doubling"
    fuse_o: bool = True
    bwd_intra: str = "triton"
    delta: str = "tm"
    bwd_rec: str = "split"
    warps_bwd: int = 4
    segments: int = 1
    bwd_scratch: str = "fp32"
    # the split backward's grad kernel (V tile, pipelining stages) and the stages of its dS kernel
    # (search space tunables; 0: the config's BV / num_stages)
    bv_grad: int = 32
    stages_grad: int = 3
    stages_dh: int = 3
    # per-kernel overrides of the split backward (0: inherit BV / warps_h, warps_bwd / num_stages);
    # not in the search space: set by benchmarks/gpu_triton_bwd_intra.py to time each kernel's
    # tiles and warps on their own (the grad and intra kernels run at 255 registers a thread)
    bv_dh: int = 0
    warps_dh: int = 0
    warps_grad: int = 0
    # K tile of the per-chunk gradient kernel (search space tunable; 0: the kernel that holds K whole
    # and recomputes Delta and dDelta; else eda_bwd_gradk_kernel, one program per chunk and K tile)
    bk_grad: int = 0
    # the intra-chunk backward's K- and V-tile dots: "tf32" (float32 operands) or "half" (the
    # 16-bit input dtype; the inverse and dA stay float32). Not searched: 2% faster at S1 (8.67 ->
    # 8.48 ms, H200 run 47) but dq, dv, dbeta errors then reach fla's (NOTES.md, error clause)
    intra_dots: str = "tf32"
    # operands of the dS scan's dots in backward: "mixed" (the default: kappa unrounded with the
    # decay applied to the rows of Kd dS, Qg and dO in float32, the rest in the 16-bit input dtype;
    # H200 run 53: the initial state's gradient 1.31x -> 0.98x fla's error with Qg in float32, and
    # the scan 2.91 -> 2.39 ms at S1 with the row decay), "input" (every operand 16-bit, as before
    # run 54), "tf32" (all float32), "kd_rows", "qg_tf32", "a_tf32" (one change each); and of the W/U
    # recompute's dots: "input" or "tf32". Not searched: probes of where the gradients lose accuracy
    # (benchmarks/grad_error.py)
    dh_dots: str = "mixed"
    wu_dots: str = "input"
    # the K tile of the intra-chunk backward kernel (``bwd_intra`` triton / triton2; 0: the
    # config's BK). 32 since H200 run 74 (one call, fwd+bwd at the default config): S1 6.494 ->
    # 6.175 ms (the kernel 2.456 -> 2.140), S5 7.004 -> 6.935. Not searched. The fused backward
    # kernel keeps the config's BK (it was not timed with 32)
    bk_intra: int = 32
    bv_intra: int = 0
    # warps of the intra-chunk backward kernel (bwd_intra triton or triton2; 0: warps_bwd). 2 since
    # H200 run 71 (one call, fwd+bwd against its 4 warps): S1 6.953 -> 6.461 ms (the kernel 2.98 ->
    # 2.48), S3 6.778 -> 6.128, S4 5.071 (run 70) -> 4.802, S5 8.230 -> 7.765; 1 warp: S1 9.106. The
    # per-chunk gradient kernel at 2 warps was slower at S1 (7.642), so warps_bwd stays 4 there
    warps_intra: int = 2
    # pipelining stages of the intra-chunk backward kernel (0: num_stages). 3 since H200 run 75
    # (one call, fwd+bwd at S1's default config): 6.144 -> 6.042 ms (the kernel 2.129 -> 2.028);
    # 1 stage 6.530
    stages_intra: int = 3
    # a register cap for the intra kernel (triton's ``maxnreg`` launch option; 0: none). At 255
    # registers 2 programs of 4 warps, or 4 of 2 warps, fit an SM; a cap trades spills (compiled
    # for sm_90a here, 2 warps: 296 bytes of stack a thread uncapped, 984-1040 at 168, 1168-1392 at
    # 128) for more programs. An override; slower wherever timed (H200 run 74, S1 fwd+bwd against
    # 6.494 uncapped: 168 registers 7.031, 128 8.330, 128 with K tiles of 32 6.841, 4 warps at 168
    # 6.958)
    maxnreg_intra: int = 0
    # warps of the backward's W/U recompute kernel (0: warps_bwd). Its per-chunk products are as
    # small as the forward's chunk-inverse kernel's, which ran best on 1 warp (run 64); an
    # override: H200 run 74, S1 fwd+bwd 6.478 (1 warp), 6.477 (2) against 6.494 (4), within noise
    warps_wu: int = 0
    # programs per SM of the persistent fused backward kernel (bwd_intra: fused)
    fused_per_sm: int = 2
    # segments > 1 with gradients: "pieces" (one backward over the pieces, segmented.py) or
    # "autograd" (through both passes; what every config did before; kept for timing them)
    seg_bwd: str = "pieces"
    # the chunk inverse Tm in the backward's W/U recompute (``delta: tm``, Triton intra backwards):
    # "wu" (the default: a training forward keeps its Tm, in the 16-bit input dtype the recompute
    # rounds Tm to anyway, until the W/U recompute reads it, then frees it before the backward's
    # peak; H200 run 57: S1 fwd+bwd 8.056 -> 7.736 ms, S4 5.744 -> 5.582, same peak, same errors)
    # or "recompute" (the W/U kernel inverts I + A again, as before run 57). The intra kernel
    # reading it too (float32 Tm kept through the peak) was slower than "wu" (7.810 ms) and +128
    # MiB at S1: removed
    bwd_tm: str = "wu"
    # the backward's chunk states and state gradients (with the K-tiled per-chunk gradients,
    # ``bk_grad`` > 0): "every" chunk's stored, or "pairs": one slot per pair of chunks, the
    # per-chunk gradient kernel rebuilding the other chunk's across its neighbour (half the memory
    # of h and dS, W kept until then; ``eda_bwd_gradk_kernel``)
    bwd_states: str = "every"
    # how the forward's chunk kernel (``delta: tm``) inverts I + A: "blocks" (the default: its
    # four BT x BT blocks and a Schur complement, about a quarter of the multiply-adds;
    # ``chunk_fwd._tm_blocks``) or "doubling" (the nilpotent product on the whole 2BT x 2BT block,
    # before run 62). Not searched: the same inverse, and "blocks" was faster at every shape (H200
    # run 62: the kernel 0.264 -> 0.184 ms at S1, the forward 1.159 -> 1.080; errors the same)
    tm_solver: str = "blocks"
    # the forward's state kernel (``delta: tm``) loads the next chunk's inputs at the top of each
    # step and carries them (``eda_fwd_h2_kernel`` PREFETCH), so their latency hides behind this
    # chunk's chain of products. Not searched: faster at every shape timed (H200 run 66, one call:
    # S1 forward 1.171 -> 0.792 ms, S3 0.918 -> 0.688, S2 2.617 -> 2.024; same errors); False loads
    # each chunk's inputs in its own step, as before
    h_prefetch: bool = True
    # the same in the backward's dS scan (``eda_bwd_dh_kernel``): each step loads the inputs of
    # the chunk before it first. Not searched; the default since run 69: H200 run 68 (one call,
    # dS scan and per-chunk gradients) S1 2.423 -> 2.272 ms, S5 5.262 -> 4.520; run 69 fwd+bwd with
    # bwd_h "tm" S1 7.096 -> 6.952, S4 5.188 -> 5.064, S5 8.940 -> 8.192, same errors. (The states
    # recompute loading ahead the same way was slower, 1.539 -> 1.583 at S1 and 1.280 -> 2.195 at
    # S5: removed.) Taken at BT 16 only (``dh_prefetch``): at BT 32 the scan compiled by triton
    # 3.6 gave wrong state gradients on an H200 (run 77: dS of the initial state 0.37 relative error,
    # the other gradients about 0.19, against 4e-3 without it; the same config is right under the
    # interpreter), so a config with longer chunks runs the scan without it
    bwd_prefetch: bool = True
    # the backward's states recompute (with the forward's Tm kept, ``bwd_tm: wu``, and the K-tiled
    # per-chunk gradients, ``bk_grad``): "wu" (the W/U kernel writes W and U, ``eda_fwd_h_kernel``
    # forms Delta = U - W S from them) or "tm" (the W/U kernel writes W alone, for the dS scan; the
    # forward's state kernel ``eda_fwd_h2_kernel`` forms Delta from Tm as in the forward, storing
    # the states and Delta: U never goes through memory), or "tm_dh" (as "tm", and the dS scan
    # forms W^T dDelta from Tm as well, so no W/U kernel runs; with ``bwd_states: pairs``, whose
    # gradient kernel reads W, as "tm"). Searched ("tm", "tm_dh"; "wu" is an override); "tm" is the
    # space's default since H200 run 69 (one call, fwd+bwd): S1 7.379 -> 7.096 ms, S4 (16 pieces)
    # 5.324 -> 5.188, S5 9.055 -> 8.940; the same peak (Tm is freed after the states kernel, or the
    # dS scan with "tm_dh", before the peak); every gradient's error the same or lower (S1-err).
    # "tm_dh" (run 70, against "tm"): S1 7.032 against 6.953, S4 5.160 against 5.071, S5 7.298
    # against 8.191 (W at K = 256 is a [32, 256] load a step, Tm [32, 32]); with the intra kernel
    # at 2 warps S5 6.912 against 7.765 (run 71): the backend's default for training at K > 128
    # (backend.default_config). "tm_dhp" (an override, written after run 73): as
    # "tm_dh" with the dS scan's product by Tm taken off the step's chain (``eda_bwd_dh_kernel``
    # TM_P); slower (H200 run 74, fwd+bwd: S1 6.986 against 6.494, S4 5.207, S5 11.278 against
    # 7.005 with "tm_dh": the scan's extra loads of P cost more than the shorter chain saves)
    bwd_h: str = "tm"

    def __post_init__(self) -> None:
        for name, known in (("dh_dots", tuple(DH_DOTS)), ("wu_dots", ("input", "tf32")),
                            ("bwd_tm", BWD_TM), ("bwd_states", ("every", "pairs")),
                            ("tm_solver", ("doubling", "blocks")), ("bwd_h", ("wu", "tm", "tm_dh", "tm_dhp"))):
            if getattr(self, name) not in known:
                raise ValueError(f"{name} must be one of {known}, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, config: Any) -> TritonParams:
        return cls(BT=int(config["BT"]), BK=int(config["BK"]), BV=int(config["BV"]),
                   num_warps=int(config["num_warps"]), num_stages=int(config["num_stages"]),
                   warps_h=int(config["warps_h"]), precision=str(config["precision"]),
                   bwd_solver=str(config["bwd_solver"]), fuse_o=bool(config["fuse_o"]),
                   bwd_intra=str(config["bwd_intra"]), delta=str(config["delta"]),
                   bwd_rec=str(config["bwd_rec"]), warps_bwd=int(config["warps_bwd"]),
                   segments=int(config["segments"]), bwd_scratch=str(config["bwd_scratch"]),
                   bv_grad=int(config["bv_grad"]), stages_grad=int(config["stages_grad"]),
                   stages_dh=int(config["stages_dh"]), warps_grad=int(config["warps_grad"]),
                   bk_grad=int(config["bk_grad"]), bwd_states=str(config["bwd_states"]),
                   bwd_h=str(config["bwd_h"]))


def dh_prefetch(p: TritonParams) -> bool:
    """Whether the dS scan loads ahead (``bwd_prefetch``): only with chunks of 16, where it was
    checked on a GPU; at BT 32 triton 3.6's build of it gave wrong gradients (H200 run 77)."""
    return p.bwd_prefetch and p.BT == 16


#: values of TritonParams.dh_dots and the dS kernel's OPS bit mask for each ("tf32": float32 DT)
DH_DOTS = {"mixed": 3, "input": 0, "tf32": 0, "kd_rows": 1, "qg_tf32": 2, "a_tf32": 4}

#: ``bwd_intra`` values whose backward is ``chunk_eda_bwd_triton`` (it takes ``exit_grads``)
TRITON_INTRA = ("triton", "triton2", "fused")

#: values of TritonParams.bwd_tm
BWD_TM = ("recompute", "wu")


def keeps_tm(p: TritonParams) -> bool:
    """Whether a training forward at ``p`` keeps its chunk inverse for the backward (``bwd_tm``)."""
    return p.bwd_tm != "recompute" and p.delta == "tm" and p.bwd_intra in TRITON_INTRA and p.wu_dots == "input"


def _pad_k(K: int) -> int:
    return max(16, triton.next_power_of_2(K))


def _fit(block: int, dim: int) -> int:
    """A tile no larger than the padded dimension (tl.dot needs >= 16)."""
    return max(16, min(block, triton.next_power_of_2(dim)))


def _override(value: int, default: int, dim: int | None = None) -> int:
    """A per-kernel override of TritonParams (0: the config's ``default``); a tile is fitted to
    the padded ``dim``."""
    if not value:
        return default
    return _fit(value, dim) if dim is not None else value


def _scratch_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


#: dtypes that replace the 16-bit scratch of the backward's recomputed W, U, states (h) and state
#: gradients (dh), by name: for measuring what each one's rounding costs
#: (benchmarks/scratch_precision.py); empty in normal use (set it with ``scratch_override``)
SCRATCH_OVERRIDE: dict[str, torch.dtype] = {}


@contextlib.contextmanager
def scratch_override(names: Iterable[str] | Mapping[str, torch.dtype],
                     dtype: torch.dtype = torch.float32) -> Iterator[None]:
    """Within the block, the backward stores the named buffers (of w, u, h, dh) in ``dtype``, or
    each in its own dtype when ``names`` maps them; the block must hold the backward too (it reads
    the override when it runs)."""
    SCRATCH_OVERRIDE.update(dict(names) if isinstance(names, Mapping) else {n: dtype for n in names})
    try:
        yield
    finally:
        SCRATCH_OVERRIDE.clear()


def _with_fallback(launch: Callable[[int, int], None], BV: int, num_stages: int) -> None:
    """Launch with (BV, num_stages); if the kernel needs more shared memory than the device has,
    retry with fewer stages, then smaller V tiles (the state kernels hold many operands)."""
    tries = [(BV, num_stages), (BV, 1)]
    bv = BV
    while bv > 16:
        bv //= 2
        tries.append((bv, 1))
    last: Exception | None = None
    for bv, ns in dict.fromkeys(tries):
        try:
            launch(bv, ns)
        except OutOfResources as err:
            last = err
            continue
        if (bv, ns) != (BV, num_stages):
            # not silent: the config asked for is not what ran (the tuner's log shows this)
            key = (getattr(launch, "__qualname__", "kernel"), BV, num_stages)
            if key not in _WARNED:
                _WARNED.add(key)
                log.warning("%s: BV=%d, num_stages=%d needs more shared memory than this device has; "
                            "ran with BV=%d, num_stages=%d", key[0], BV, num_stages, bv, ns)
        return
    assert last is not None
    raise last


_WARNED: set[tuple[str, int, int]] = set()


def _dot_dtype(dtype: torch.dtype) -> tl.dtype:
    """Operand dtype of the kernels' dots: the input's 16-bit type, else float32 (and always
    float32 under the interpreter, whose 16-bit dots are not reliable)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return tl.float32
    return {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}.get(dtype, tl.float32)


@functools.lru_cache(maxsize=64)
def _varlen_index(seqlens: tuple[int, ...], BT: int, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """chunk_indices [NC, 2] (sequence, chunk in sequence), chunk_offsets [N], NC. Built on the
    CPU without a Python loop over chunks and copied once; cached per (lengths, BT, device), so a
    model that repeats its packing (and the segments switch) pays no host work or copy again."""
    lens = torch.tensor(seqlens, dtype=torch.int64).diff()
    counts = (lens + BT - 1) // BT
    offsets = torch.cumsum(counts, 0) - counts
    NC = int(counts.sum())
    seq = torch.repeat_interleave(torch.arange(len(counts)), counts)
    chunk = torch.arange(NC) - offsets[seq]
    ci = torch.stack((seq, chunk), 1).to(torch.int32).to(device)
    co = offsets.to(torch.int32).to(device)
    return ci, co, NC


def _index(T: int, seqlens: tuple[int, ...] | None, BT: int, device: torch.device
           ) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    if seqlens is None:
        return None, None, triton.cdiv(T, BT)
    return _varlen_index(seqlens, BT, device)


@functools.lru_cache(maxsize=64)
def _varlen_pairs(seqlens: tuple[int, ...], BT: int, device: torch.device) -> tuple[torch.Tensor, int]:
    lens = torch.tensor(seqlens, dtype=torch.int64).diff()
    pairs = ((lens + BT - 1) // BT + 1) // 2
    return (torch.cumsum(pairs, 0) - pairs).to(torch.int32).to(device), int(pairs.sum())


def _pair_index(T: int, seqlens: tuple[int, ...] | None, BT: int, device: torch.device
                ) -> tuple[torch.Tensor | None, int]:
    """``bwd_states: pairs``: each sequence's first slot in the per-pair layout (None without
    cu_seqlens) and the slots per head (pairs of chunks, a last lone chunk counting as one)."""
    if seqlens is None:
        return None, (triton.cdiv(T, BT) + 1) // 2
    return _varlen_pairs(seqlens, BT, device)


def chunk_eda_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                  g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, scale: float,
                  h0: torch.Tensor | None, output_final_state: bool, cu_seqlens: torch.Tensor | None,
                  seqlens: tuple[int, ...] | None, p: TritonParams, stages: int = 3,
                  output: bool = True, tm_cache: dict[str, torch.Tensor] | None = None,
                  v_pad: int = 0) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """q, k, e [B, T, H, K]; v [B, T, H, V]. Returns o [B, T, H, V] and the final state or None.

    ``stages`` < 3 runs only the first kernels (for timing the pieces; the output is then garbage).
    ``output=False`` runs the state recurrence for the final state alone (o is None). With
    ``delta: tm``, ``tm_cache`` keeps the chunk inverse (it depends on k, e, g, beta, gamma and the
    chunking, not on v or the state): a second call with the same dict and inputs reuses it.
    ``v_pad`` (``delta: tm``, no output): the state has that many columns after v's, with zero
    values (h0 and the final state are [.., K, V + v_pad]): segmented.py's [v | 0] without a copy.
    """
    B, T, H, K = q.shape
    VR = v.shape[-1]
    V = VR + v_pad
    if v_pad and (output or p.delta != "tm"):
        raise ValueError("v_pad needs delta 'tm' and output=False")
    BT = p.BT
    NR = 2 * BT
    N = B if seqlens is None else len(seqlens) - 1
    ci, co, NCT = _index(T, seqlens, BT, q.device)
    varlen = seqlens is not None
    sdt = _scratch_dtype(q.dtype)
    BK, BV = _fit(p.BK, K), _fit(p.BV, V)
    use_g = g is not None
    g_ = g if use_g else beta
    dummy = beta

    use_tm = p.delta == "tm"
    cached = tm_cache is not None and "tm" in tm_cache and use_tm
    if use_tm:
        # only the chunk inverse Tm goes through memory; the state kernel forms Delta from it
        tm = tm_cache["tm"] if cached else torch.empty(B, H, NCT, NR, NR, dtype=sdt, device=q.device)
        if tm_cache is not None:
            tm_cache["tm"] = tm
        w = u = dummy
    else:
        tm = dummy
        w = torch.empty(B, H, NCT, NR, K, dtype=sdt, device=q.device)
        u = torch.empty(B, H, NCT, NR, V, dtype=sdt, device=q.device)

    def launch_wu(bv: int, ns: int) -> None:
        if use_tm:
            eda_fwd_tm_kernel[(NCT, B * H)](
                k, e, g_, beta, gamma, tm, cu_seqlens, ci, T, NCT, H=H, K=K, BT=BT, BK=BK,
                LOG2N=int(math.log2(NR)), USE_G=use_g, IS_VARLEN=varlen, PREC=p.precision,
                DT=_dot_dtype(q.dtype), BLOCKS=p.tm_solver == "blocks", num_warps=p.num_warps,
                num_stages=ns)
            return
        eda_fwd_wu_kernel[(NCT, B * H)](
            k, e, v, g_, beta, gamma, w, u, cu_seqlens, ci, T, NCT,
            H=H, K=K, V=V, BT=BT, BK=BK, BV=bv, LOG2N=int(math.log2(BT)), USE_G=use_g,
            IS_VARLEN=varlen, PREC=p.precision, DT=_dot_dtype(q.dtype), num_warps=p.num_warps,
            num_stages=ns)

    if not cached:
        _with_fallback(launch_wu, BV, p.num_stages)
    o = torch.empty_like(v) if output else None
    if stages < 2:
        return o, None

    fuse = p.fuse_o and output
    h = torch.empty(B, H, NCT, K, V, dtype=sdt, device=q.device) if output and not fuse else dummy
    vn = torch.empty(B, H, NCT, NR, V, dtype=sdt, device=q.device) if output and not fuse else dummy
    o_ = o if o is not None else dummy
    ht = torch.empty(N, H, K, V, dtype=torch.float32, device=q.device) if output_final_state else None

    def launch_h(bv: int, ns: int) -> None:
        common = dict(H=H, K=K, V=V, BT=BT, BK=_pad_k(K), BV=bv, USE_G=use_g, STORE_H=output and not fuse,
                      STORE_VN=output and not fuse, FUSE_O=fuse, USE_H0=h0 is not None, STORE_HT=ht is not None,
                      IS_VARLEN=varlen, PREC=p.precision, DT=_dot_dtype(q.dtype), num_warps=p.warps_h,
                      num_stages=ns)
        grid = (triton.cdiv(V, bv), N * H)
        h0_, ht_ = h0 if h0 is not None else dummy, ht if ht is not None else dummy
        if use_tm:
            eda_fwd_h2_kernel[grid](q, k, e, v, g_, beta, gamma, tm, h, vn, h0_, ht_, o_, scale,
                                    cu_seqlens, co, T, NCT, VR=VR, PREFETCH=p.h_prefetch, **common)
        else:
            eda_fwd_h_kernel[grid](q, k, e, g_, w, u, dummy, dummy, h, vn, h0_, ht_, o_, scale,
                                   cu_seqlens, co, T, NCT, USE_KD=False, **common)

    _with_fallback(launch_h, BV, p.num_stages)
    if stages < 3 or fuse or not output:
        return o, ht

    def launch_o(bv: int, ns: int) -> None:
        eda_fwd_o_kernel[(triton.cdiv(V, bv), NCT, B * H)](
            q, k, e, g_, h, vn, o, cu_seqlens, ci, scale, T, NCT,
            H=H, K=K, V=V, BT=BT, BK=BK, BV=bv, USE_G=use_g, IS_VARLEN=varlen, PREC=p.precision,
            DT=_dot_dtype(q.dtype), num_warps=p.num_warps, num_stages=ns)

    _with_fallback(launch_o, BV, p.num_stages)
    return o, ht


def chunk_eda_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                  g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, scale: float,
                  h0: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
                  seqlens: tuple[int, ...] | None, do: torch.Tensor, dht: torch.Tensor | None,
                  p: TritonParams, exit_grads: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  tm_cache: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor | None, ...]:
    """Gradients (dq, dk, dv, de, dg, dbeta, dgamma, dh0) given do [B, T, H, V] and dht
    (``exit_grads``, ``tm_cache``: see ``chunk_eda_bwd_triton``; Triton intra-chunk backwards only)."""
    if p.bwd_intra in TRITON_INTRA:
        return chunk_eda_bwd_triton(q, k, v, e, g, beta, gamma, scale, h0, cu_seqlens, seqlens, do,
                                    dht, p, exit_grads=exit_grads, tm_cache=tm_cache)
    if exit_grads is not None:
        raise ValueError("exit_grads needs a Triton intra-chunk backward")
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = p.BT

    N = B if seqlens is None else len(seqlens) - 1
    ci, co, NCT = _index(T, seqlens, BT, q.device)
    varlen = seqlens is not None
    f32 = torch.float32
    chunked = chunk_layout(T, BT, seqlens, q.device).chunked
    leaves = [x.detach().to(f32).requires_grad_() for x in (q, k, v, e, beta, gamma)]
    g_leaf = g.detach().to(f32).requires_grad_() if g is not None else None
    with torch.enable_grad():
        ql, kl, vl, el, bl, gml = leaves
        qc, kc, vc, ec = (chunked(x.transpose(1, 2)) for x in (ql * scale, kl, vl, el))
        bc, gmc = (chunked(x.transpose(1, 2)) for x in (bl, gml))
        gz = g_leaf if g_leaf is not None else torch.zeros_like(bl)
        gc = chunked(gz.transpose(1, 2)).cumsum(-1)
        outs = torch_intra(qc, kc, vc, ec, gc, bc, gmc, p.bwd_solver)
    W, U, Qg, Aqk, Kd, dec = (x.detach().contiguous() for x in outs)
    BV = _fit(p.BV, V)
    BKp = _pad_k(K)
    dummy = dec
    h = torch.empty(B, H, NCT, K, V, dtype=f32, device=q.device)

    def launch_h(bv: int, ns: int) -> None:
        eda_fwd_h_kernel[(triton.cdiv(V, bv), N * H)](
            dummy, k, e, dummy, W, U, Kd, dec, h, dummy, h0 if h0 is not None else dummy, dummy,
            dummy, 1.0, cu_seqlens, co, T, NCT,
            H=H, K=K, V=V, BT=BT, BK=BKp, BV=bv, USE_G=False, USE_KD=True, STORE_H=True,
            STORE_VN=False, FUSE_O=False, USE_H0=h0 is not None, STORE_HT=False, IS_VARLEN=varlen,
            PREC=p.precision, DT=tl.float32, num_warps=p.warps_h, num_stages=ns)

    _with_fallback(launch_h, BV, p.num_stages)

    doc = chunked(do.to(f32).transpose(1, 2)).contiguous()
    NBH = B * H
    dU = torch.empty_like(U)
    dh0 = torch.empty(N, H, K, V, dtype=f32, device=q.device)
    dht_ = dht.to(f32).contiguous() if dht is not None else None
    bufs: dict[str, torch.Tensor] = {}

    def launch_bwd(bv: int, ns: int) -> None:
        nv = triton.cdiv(V, bv)
        bufs.update(dW=torch.empty(nv, *W.shape, dtype=f32, device=q.device),
                    dQg=torch.empty(nv, *Qg.shape, dtype=f32, device=q.device),
                    dA=torch.empty(nv, *Aqk.shape, dtype=f32, device=q.device),
                    dKd=torch.empty(nv, *Kd.shape, dtype=f32, device=q.device),
                    ddec=torch.empty(nv, *dec.shape, dtype=f32, device=q.device))
        eda_bwd_h_kernel[(nv, N * H)](
            h, W, U, Qg, Aqk, Kd, dec, doc, dht_ if dht_ is not None else dummy,
            dU, bufs["dW"], bufs["dQg"], bufs["dA"], bufs["dKd"], bufs["ddec"], dh0,
            dummy, dummy, dummy, dummy, 1.0, cu_seqlens, co,
            T, NCT, NBH, H=H, K=K, V=V, BT=BT, BK=BKp, BV=bv, USE_DHT=dht_ is not None,
            IS_VARLEN=varlen, PREC=p.precision, DT=_dot_dtype(q.dtype), NATIVE=False, USE_G=False,
            ATOMIC=False, num_warps=p.warps_h, num_stages=ns)

    _with_fallback(launch_bwd, BV, p.num_stages)
    dW, dQg, dA, dKd, ddec = (bufs[n] for n in ("dW", "dQg", "dA", "dKd", "ddec"))
    grads_out = (dW.sum(0), dU, dQg.sum(0), dA.sum(0), dKd.sum(0), ddec.sum(0))
    inputs = [*leaves] + ([g_leaf] if g_leaf is not None else [])
    pairs = [(o_, d_) for o_, d_ in zip(outs, grads_out) if o_.requires_grad]
    grads = torch.autograd.grad([o_ for o_, _ in pairs], inputs, [d_ for _, d_ in pairs],
                                allow_unused=True)
    dq, dk, dv, de, dbeta, dgamma = (
        (gr if gr is not None else torch.zeros_like(x)).to(x0.dtype)
        for gr, x, x0 in zip(grads[:6], leaves, (q, k, v, e, beta, gamma)))
    dg = None
    if g is not None:
        dg = (grads[6] if grads[6] is not None else torch.zeros_like(g_leaf)).to(g.dtype)
    return dq, dk, dv, de, dg, dbeta, dgamma, (dh0.to(h0.dtype) if h0 is not None else None)


def chunk_eda_bwd_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                         g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, scale: float,
                         h0: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
                         seqlens: tuple[int, ...] | None, do: torch.Tensor, dht: torch.Tensor | None,
                         p: TritonParams, stages: int = 3,
                         exit_grads: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         tm_cache: dict[str, torch.Tensor] | None = None
                         ) -> tuple[torch.Tensor | None, ...]:
    """The backward in Triton: recompute W, U and the chunk states (forward kernels), run the
    state recurrence backwards (dW, dU, dQg, dAqk, dKd per chunk), then the intra-chunk backward
    kernel maps those to the inputs' gradients. ``stages`` < 3 stops after the recompute (1) or
    the recurrence (2), for timing the pieces (the gradients are then garbage).

    ``exit_grads`` (the pieces of ``segments``, run as sequences; ``bwd_rec: split``): the
    gradient of the state leaving each sequence is not known yet. The dS scan runs once with none,
    ``exit_grads`` maps the gradients it leaves at the sequences' starts to those leaving each
    sequence (``kernel_variants.segments.exit_gradients``), and the scan runs again with them.

    ``tm_cache`` (config ``bwd_tm``): the forward's chunk inverse under "tm" (same inputs and
    chunking) for the W/U recompute, popped so that it is freed once that kernel has read it."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = p.BT
    NR = 2 * BT
    N = B if seqlens is None else len(seqlens) - 1
    ci, co, NCT = _index(T, seqlens, BT, q.device)
    varlen = seqlens is not None
    sdt = _scratch_dtype(q.dtype)
    BK, BV = _fit(p.BK, K), _fit(p.BV, V)
    BKp = _pad_k(K)
    use_g = g is not None
    g_ = g if use_g else beta
    dummy = beta
    f32 = torch.float32
    dt = _dot_dtype(q.dtype)

    # U in float32 unless bwd_scratch is "half": Delta = U - W S cancels, so U's 16-bit rounding
    # was amplified in Delta and from it in dg and dq (H200 run 50: dg 1.03x -> 0.94x fla's error,
    # fwd+bwd 8.44 -> 8.53 ms and 256 MiB more at S1); with bk_grad Delta is stored over U, in float32
    udt = sdt if p.bwd_scratch == "half" else f32
    u = torch.empty(B, H, NCT, NR, V, dtype=SCRATCH_OVERRIDE.get("u", udt), device=q.device)
    # bk_grad: the per-chunk gradients over K tiles read Delta and dDelta from memory: the states
    # recompute overwrites U with Delta (each program reads a chunk's rows of U before it writes
    # them), the dS scan stores dDelta
    gradk = p.bk_grad > 0 and p.bwd_rec == "split" and p.bwd_intra != "fused"

    tm = tm_cache.pop("tm", None) if tm_cache is not None and keeps_tm(p) else None
    # bwd_h "tm": the states kernel forms Delta from Tm (no U); it needs Delta stored (gradk).
    # "tm_dh": the dS scan forms W^T dDelta from Tm too (no W): no W/U kernel at all (not with
    # pairs, whose per-chunk gradient kernel reads W)
    pairs = gradk and p.bwd_states == "pairs"
    h2 = tm is not None and gradk and p.bwd_h in ("tm", "tm_dh", "tm_dhp")
    no_w = h2 and p.bwd_h in ("tm_dh", "tm_dhp") and not pairs
    w = dummy if no_w else torch.empty(B, H, NCT, NR, K, dtype=SCRATCH_OVERRIDE.get("w", sdt), device=q.device)

    def launch_wu(bv: int, ns: int) -> None:
        eda_fwd_wu_kernel[(NCT, B * H)](
            k, e, v, g_, beta, gamma, w, u, cu_seqlens, ci, T, NCT,
            H=H, K=K, V=V, BT=BT, BK=BK, BV=bv, LOG2N=int(math.log2(BT)), USE_G=use_g,
            IS_VARLEN=varlen, PREC=p.precision, DT=tl.float32 if p.wu_dots == "tf32" else dt,
            tm=tm if tm is not None else dummy, USE_TM=tm is not None, STORE_U=not h2,
            num_warps=_override(p.warps_wu, p.warps_bwd), num_stages=ns)

    if not no_w:
        _with_fallback(launch_wu, BV, p.num_stages)
    if not h2:
        tm = None  # freed before the backward's peak
    # bwd_states "pairs" (with the K-tiled per-chunk gradients): the chunk states and their
    # gradients are kept for every other chunk (one slot per pair), the per-chunk gradient kernel
    # rebuilds the others: h and dS take half the memory (1 GiB less at S5 and at S1)
    po, NC2 = _pair_index(T, seqlens, BT, q.device) if pairs else (None, NCT)
    h = torch.empty(B, H, NC2, K, V, dtype=SCRATCH_OVERRIDE.get("h", sdt), device=q.device)

    def launch_h(bv: int, ns: int) -> None:
        common = dict(H=H, K=K, V=V, BT=BT, BK=BKp, BV=bv, USE_G=use_g, STORE_H=True, STORE_VN=gradk,
                      FUSE_O=False, USE_H0=h0 is not None, STORE_HT=False, IS_VARLEN=varlen, PREC=p.precision,
                      DT=dt, pair_offsets=po, NC2=NC2, PAIRS=pairs, num_warps=p.warps_h, num_stages=ns)
        h0_ = h0 if h0 is not None else dummy
        if h2:  # Delta (over U's buffer) and the states as the forward forms them
            eda_fwd_h2_kernel[(triton.cdiv(V, bv), N * H)](
                q, k, e, v, g_, beta, gamma, tm, h, u, h0_, dummy, dummy, scale, cu_seqlens, co, T, NCT,
                VR=V, PREFETCH=p.h_prefetch, **common)
        else:
            eda_fwd_h_kernel[(triton.cdiv(V, bv), N * H)](
                q, k, e, g_, w, u, dummy, dummy, h, u if gradk else dummy, h0_, dummy, dummy, scale, cu_seqlens,
                co, T, NCT, USE_KD=False, **common)

    _with_fallback(launch_h, BV, p.num_stages)
    if not no_w:
        tm = None
    if stages <= 1:
        return (None,) * 8

    # bwd_scratch "half": the per-chunk gradients (dU, dW, dQg, dAqk, dKd) in the 16-bit input
    # dtype (half the bytes the grad kernel writes and the intra kernel reads; both compute in fp32)
    gdt = sdt if p.bwd_rec == "split" and p.bwd_scratch == "half" else f32
    fused = p.bwd_intra == "fused"
    if fused and p.bwd_rec != "split":
        raise ValueError("bwd_intra 'fused' needs bwd_rec 'split' (the search space excludes the pair)")
    # where the per-chunk gradients live: one slot per chunk, or (fused) one per program
    lead = (_fused_programs(q.device, NCT * B * H, p.fused_per_sm),) if fused else (B, H, NCT)
    dU = torch.empty(*lead, NR, V, dtype=gdt, device=q.device)
    dh0 = torch.empty(N, H, K, V, dtype=f32, device=q.device)
    dht_ = dht.to(f32).contiguous() if dht is not None else None
    bufs: dict[str, torch.Tensor] = {}

    def launch_bwd(bv: int, ns: int) -> None:
        # one buffer for all V tiles (NBH = 0 makes every tile address it), added atomically
        nv = triton.cdiv(V, bv)
        alloc = torch.zeros if nv > 1 else torch.empty
        bufs.update(dW=alloc(B, H, NCT, NR, K, dtype=f32, device=q.device),
                    dQg=alloc(B, H, NCT, BT, K, dtype=f32, device=q.device),
                    dA=alloc(B, H, NCT, BT, NR, dtype=f32, device=q.device),
                    dKd=alloc(B, H, NCT, NR, K, dtype=f32, device=q.device),
                    ddec=alloc(B, H, NCT, dtype=f32, device=q.device))
        eda_bwd_h_kernel[(nv, N * H)](
            h, w, u, dummy, dummy, dummy, dummy, do, dht_ if dht_ is not None else dummy,
            dU, bufs["dW"], bufs["dQg"], bufs["dA"], bufs["dKd"], bufs["ddec"], dh0,
            q, k, e, g_, scale, cu_seqlens, co, T, NCT, 0,
            H=H, K=K, V=V, BT=BT, BK=BKp, BV=bv, USE_DHT=dht_ is not None, IS_VARLEN=varlen,
            PREC=p.precision, DT=dt, NATIVE=True, USE_G=use_g, ATOMIC=nv > 1, num_warps=p.warps_h,
            num_stages=ns)

    store_dh = True  # false for the first of the two dS scans over pieces (exit_grads)

    def launch_dh(bv: int, ns: int) -> None:
        eda_bwd_dh_kernel[(triton.cdiv(V, bv), N * H)](
            w, do, dht_ if dht_ is not None else dummy, bufs["dh"], dh0, q, k, e, g_, scale, cu_seqlens,
            co, T, NCT, H=H, K=K, V=V, BT=BT, BK=BKp, BV=bv, USE_DHT=dht_ is not None,
            IS_VARLEN=varlen, PREC=p.precision, DT=tl.float32 if p.dh_dots == "tf32" else dt, USE_G=use_g,
            STORE_DH=store_dh, du=dU, OPS=DH_DOTS[p.dh_dots],
            STORE_DU=gradk and store_dh, pair_offsets=po, NC2=NC2, PAIRS=pairs, PREFETCH=dh_prefetch(p),
            tm=tm if no_w else dummy, beta=beta, gamma=gamma, USE_TM=no_w, TM_P=p.bwd_h == "tm_dhp",
            num_warps=_override(p.warps_dh, p.warps_h), num_stages=ns)

    def launch_grad(bv: int, ns: int) -> None:
        eda_bwd_grad_kernel[(NCT, B * H)](
            h, bufs["dh"], w, u, do, dU, bufs["dW"], bufs["dQg"], bufs["dA"], bufs["dKd"], bufs["ddec"],
            q, k, e, g_, scale, cu_seqlens, ci, T, NCT, H=H, K=K, V=V, BT=BT, BK=BKp, BV=bv,
            IS_VARLEN=varlen, PREC=p.precision, DT=dt, USE_G=use_g, num_warps=_override(p.warps_grad, p.warps_bwd),
            num_stages=ns)

    BKG = _fit(p.bk_grad, K) if gradk else BKp
    NKT = triton.cdiv(K, BKG)

    def launch_gradk(bv: int, ns: int) -> None:
        eda_bwd_gradk_kernel[(NCT, B * H, NKT)](
            h, bufs["dh"], u, dU, do, bufs["dW"], bufs["dQg"], bufs["dA"], bufs["dKd"], bufs["ddec"],
            cu_seqlens, ci, T, NCT, H=H, K=K, V=V, BT=BT, BK=BKG, BV=bv, IS_VARLEN=varlen,
            PREC=p.precision, DT=dt, w=w, q=q, k=k, e=e, g=g_, scale=scale, pair_offsets=po, NC2=NC2,
            PAIRS=pairs, USE_G=use_g, QDT=tl.float32 if DH_DOTS[p.dh_dots] & 2 or p.dh_dots == "tf32" else dt,
            num_warps=_override(p.warps_grad, p.warps_bwd), num_stages=ns)

    if p.bwd_rec == "split":
        # sequential dS only (stored per chunk), then every other gradient per chunk in parallel
        # (fused: the grad kernel's work runs inside the intra kernel's, below)
        bufs["dh"] = torch.empty(B, H, NC2, K, V, dtype=SCRATCH_OVERRIDE.get("dh", sdt), device=q.device)
        if exit_grads is not None:
            # first pass: every piece's own contribution to the gradient entering it
            dht_, store_dh = None, False
            _with_fallback(launch_dh, _override(p.bv_dh, BV, V), _override(p.stages_dh, p.num_stages))
            dht_, store_dh = exit_grads(dh0).to(f32).contiguous(), True
        _with_fallback(launch_dh, _override(p.bv_dh, BV, V), _override(p.stages_dh, p.num_stages))
        tm = None
        if gradk and not pairs:
            # W is dead after the dS scan here (the K-tiled kernel reads Delta, not W and U): free
            # it before the per-chunk gradients are allocated (the backward's peak is in the next
            # kernel: states, dS, Delta and the five per-chunk gradients)
            w = dummy
        bufs.update(dW=torch.empty(*lead, NR, K, dtype=gdt, device=q.device),
                    dQg=torch.empty(*lead, BT, K, dtype=gdt, device=q.device),
                    dA=torch.empty(*lead, BT, NR, dtype=gdt, device=q.device),
                    dKd=torch.empty(*lead, NR, K, dtype=gdt, device=q.device),
                    ddec=torch.empty(B, H, NCT, *((NKT,) if gradk else ()), dtype=f32, device=q.device))
        if gradk:
            _with_fallback(launch_gradk, _override(p.bv_grad, BV, V), _override(p.stages_grad, p.num_stages))
            bufs["ddec"] = bufs["ddec"].sum(-1)  # the K tiles' parts
        elif not fused:
            _with_fallback(launch_grad, _override(p.bv_grad, BV, V), _override(p.stages_grad, p.num_stages))
    else:
        if exit_grads is not None:
            raise ValueError("exit_grads needs bwd_rec 'split'")
        _with_fallback(launch_bwd, BV, p.num_stages)
    dW, dQg, dA, dKd, ddec = (bufs[n] for n in ("dW", "dQg", "dA", "dKd", "ddec"))
    if stages <= 2:
        return (None,) * 8
    if not fused:
        # the recomputed W, U, states and the state gradients are dead: free them before the
        # gradients of the inputs are allocated (the peak of the backward is otherwise here)
        bufs.pop("dh", None)
        w = u = h = dummy

    # the kernel writes every gradient once, in the input's dtype
    dq, dk, de, dv = (torch.empty_like(x) for x in (q, k, e, v))
    dbeta, dgamma = torch.empty_like(beta), torch.empty_like(gamma)
    dg = torch.empty_like(g) if g is not None else None

    if fused:
        def launch_fused(bv: int, ns: int) -> None:
            eda_bwd_fused_kernel[lead](
                h, bufs["dh"], w, u, do, q, k, e, v, g_, beta, gamma, dU, dW, dQg, dA, dKd, ddec,
                dq, dk, de, dv, dg if dg is not None else dummy, dbeta, dgamma, cu_seqlens, ci, scale,
                T, NCT, B * H, H=H, K=K, V=V, BT=BT, BKG=BKp, BVG=min(_override(p.bv_grad, BV, V), bv),
                BK=BK, BV=bv, LOG2N=int(math.log2(NR)), USE_G=use_g,
                IS_VARLEN=varlen, PREC=p.precision, DT=dt, num_warps=p.warps_bwd, num_stages=ns)

        _with_fallback(launch_fused, _override(p.bv_intra, BV, V), _override(p.stages_grad, p.num_stages))
        return dq, dk, dv, de, dg, dbeta, dgamma, (dh0.to(h0.dtype) if h0 is not None else None)

    two_block = p.bwd_intra == "triton2"
    intra_kernel = eda_bwd_intra2_kernel if two_block else eda_bwd_intra_kernel
    # the two-block kernel inverts BT x BT blocks, the other the whole 2BT x 2BT block
    log2n = int(math.log2(BT if two_block else NR))

    def launch_intra(bv: int, ns: int) -> None:
        intra_kernel[(NCT, B * H)](
            q, k, e, v, g_, beta, gamma, dW, dU, dQg, dA, dKd, ddec,
            dq, dk, de, dv, dg if dg is not None else dummy, dbeta, dgamma, cu_seqlens, ci, scale,
            T, NCT, H=H, K=K, V=V, BT=BT, BK=_override(p.bk_intra, BK, K), BV=bv, LOG2N=log2n, USE_G=use_g,
            IS_VARLEN=varlen, PREC=p.precision, DT=dt, **({} if two_block else {"LOWP": p.intra_dots == "half"}),
            num_warps=_override(p.warps_intra, p.warps_bwd), num_stages=ns,
            **({"maxnreg": p.maxnreg_intra} if p.maxnreg_intra else {}))

    _with_fallback(launch_intra, _override(p.bv_intra, BV, V), _override(p.stages_intra, p.num_stages))
    return dq, dk, dv, de, dg, dbeta, dgamma, (dh0.to(h0.dtype) if h0 is not None else None)


def _fused_programs(device: torch.device, work: int, per_sm: int) -> int:
    """Programs of the persistent fused backward kernel: ``per_sm`` per multiprocessor (two
    blocks of 4 warps at 255 registers fit one SM), never more than there are chunks."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    return max(1, min(work, per_sm * sms))


class ChunkEdaFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, scale: float,
                h0: torch.Tensor | None, output_final_state: bool, cu_seqlens: torch.Tensor | None,
                seqlens: tuple[int, ...] | None, p: TritonParams, need_o: bool = True
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        # bwd_tm: a training forward keeps its chunk inverse for the backward's first reader
        keep = any(ctx.needs_input_grad) and keeps_tm(p)
        tm_cache: dict[str, torch.Tensor] | None = {} if keep else None
        o, ht = chunk_eda_fwd(q, k, v, e, g, beta, gamma, scale, h0, output_final_state, cu_seqlens,
                              seqlens, p, output=need_o, tm_cache=tm_cache)
        ctx.save_for_backward(q, k, v, e, g, beta, gamma, h0, cu_seqlens)
        ctx.scale, ctx.seqlens, ctx.p, ctx.tm_cache = scale, seqlens, p, tm_cache
        return o, ht

    @staticmethod
    def backward(ctx: Any, do: torch.Tensor | None, dht: torch.Tensor | None) -> tuple[Any, ...]:
        q, k, v, e, g, beta, gamma, h0, cu_seqlens = ctx.saved_tensors
        # no output asked for (need_o=False), or an output that reached no loss
        do = torch.zeros_like(v) if do is None else do.contiguous()
        dq, dk, dv, de, dg, dbeta, dgamma, dh0 = chunk_eda_bwd(
            q, k, v, e, g, beta, gamma, ctx.scale, h0, cu_seqlens, ctx.seqlens, do, dht, ctx.p,
            tm_cache=ctx.tm_cache)
        return dq, dk, dv, de, dg, dbeta, dgamma, None, dh0, None, None, None, None, None


def chunk_eda_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                     g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, scale: float,
                     initial_state: torch.Tensor | None, output_final_state: bool,
                     cu_seqlens: torch.Tensor | None, use_qk_l2norm_in_kernel: bool,
                     p: TritonParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """EDA through the Triton chunk kernels; differentiable in every tensor input."""
    if use_qk_l2norm_in_kernel:
        # in float32, back to the input dtype: the kernels read the input dtype
        q, k, e = (l2norm(x.float()).to(x.dtype) for x in (q, k, e))
    seqlens = tuple(int(x) for x in cu_seqlens.tolist()) if cu_seqlens is not None else None
    if p.segments > 1:
        from kernel_variants.triton.segmented import chunk_eda_segmented

        return chunk_eda_segmented(q, k, v, e, g, beta, gamma, float(scale), initial_state,
                                   output_final_state, seqlens, p)
    o, ht = ChunkEdaFunction.apply(q, k, v, e, g, beta, gamma, float(scale), initial_state,
                                   output_final_state, cu_seqlens, seqlens, p)
    return o, ht


def params_call(p: TritonParams) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    """``chunk_eda_triton`` at ``p`` with ``chunk_eda``'s keyword inputs (``make_inputs``) and the
    default scale: for scripts and checks that pin TritonParams the search space does not name."""
    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, g: torch.Tensor | None,
           beta: torch.Tensor, gamma: torch.Tensor, initial_state: torch.Tensor | None = None,
           output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None,
           use_qk_l2norm_in_kernel: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        return chunk_eda_triton(q, k, v, e, g, beta, gamma, q.shape[-1] ** -0.5, initial_state,
                                output_final_state, cu_seqlens, use_qk_l2norm_in_kernel, p)
    return fn
