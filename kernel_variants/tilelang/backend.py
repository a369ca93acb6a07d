"""Backend ``tilelang``: EDA's chunked forward as two TileLang kernels (see ``kernels.py``).

Forward only: ``supports`` rejects training problems (no backward kernels yet), and the built
callable refuses inputs that require grad. CUDA tensors run the GPU-style build in their dtype
(float32/float16/bfloat16); CPU tensors the CPU-style build (target ``"c"``), which stores every
dtype as float32 (TileLang's C target has no bfloat16) and returns the input dtype. TileLang is
imported lazily, so this module imports without it. Kernels are compiled once per process per
(kernel, padded K/V, dtype, scale, initial-state flag, tunables, device); batch, length, heads
and sequences are runtime sizes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from eda_tune.backends.base import Backend, EdaKernel
from eda_tune.errors import EdaError
from eda_tune.inputs import l2norm
from eda_tune.problem import Config, Problem
from eda_tune.search.space import DEFAULT_SMEM_LIMIT
from kernel_variants.tilelang.kernels import (
    GENERATORS,
    KernelProblem,
    Tunables,
    intra_smem,
    recurrence_smem,
    recurrence_tm_smem,
    tm_smem,
)

DTYPES = ("float32", "float16", "bfloat16")
MAX_HEAD_DIM = 256


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


def cuda_target(device: torch.device | int | None = None) -> Any:
    """The TVM target of a CUDA device; Hopper gets the "a" arch (wgmma, TMA).

    Issue 4 reports that plain sm_90 trips a static_assert; with these kernels and nvcc 13.0 both
    built (2026-11-28), but sm_90a is what ran on the H200.
    """
    import tvm

    major, minor = torch.cuda.get_device_capability(device)
    arch = f"sm_{major}{minor}" + ("a" if major == 9 else "")
    return tvm.target.Target({"kind": "cuda", "arch": arch})


def padded_dims(K: int, V: int, BK: int, BV: int) -> tuple[int, int]:
    """K and V as the kernels see them: K a multiple of BK, V of both BK and BV (zeros added)."""
    return _ceil_to(K, BK), _ceil_to(V, max(BK, BV))


def kernel_specs(problem: Problem, config: Config | Mapping[str, Any], scale: float | None = None
                 ) -> list[tuple[str, KernelProblem, Tunables]]:
    """The (kind, kernel problem, tunables) of the kernels one (problem, config) compiles:
    ``intra`` and ``recurrence`` (config ``design: wu``), or ``tm`` and ``recurrence_tm``
    (``design: tm``).

    The first kernel does not depend on BV, N, scale or the initial state; its spec says so,
    so that callers (the compile cache, the lowering test) can share it.
    """
    cfg = config.to_dict() if isinstance(config, Config) else dict(config)
    tun = Tunables(BT=int(cfg["BT"]), BK=int(cfg["BK"]), BV=int(cfg["BV"]), threads=int(cfg["threads"]),
                   num_stages=int(cfg["num_stages"]))
    Kp, Vp = padded_dims(problem.K, problem.V, tun.BK, tun.BV)
    dt = problem.dtype
    intra = (KernelProblem(K=Kp, V=Vp, dtype=dt, scale=1.0, initial_state=False),
             Tunables(BT=tun.BT, BK=tun.BK, BV=tun.BK, threads=tun.threads, num_stages=tun.num_stages))
    rec = KernelProblem(K=Kp, V=Vp, dtype=dt, scale=float(problem.K ** -0.5 if scale is None else scale),
                        initial_state=problem.initial_state)
    if str(cfg.get("design", "wu")) == "tm":
        return [("tm", *intra), ("recurrence_tm", rec, tun)]
    return [("intra", *intra), ("recurrence", rec, tun)]


_COMPILED: dict[tuple[Any, ...], Any] = {}
_COMPILE_LOCK = threading.Lock()


def compile_kernel(kind: str, problem: KernelProblem, tun: Tunables, style: str,
                   device: torch.device | None = None) -> Any:
    """Compile (once per process) kernel ``kind`` (a key of ``kernels.GENERATORS``) for CPU or GPU."""
    if kind in ("intra", "tm"):
        # the intra kernel never sees N, scale, BV or initial_state; share its build across them
        problem = KernelProblem(K=problem.K, V=problem.V, dtype=problem.dtype, scale=1.0,
                                initial_state=False)
        tun = Tunables(BT=tun.BT, BK=tun.BK, BV=tun.BK, threads=tun.threads, num_stages=tun.num_stages)
    key = (kind, problem, tun, style, str(device) if style == "gpu" else "cpu")
    fn = _COMPILED.get(key)
    if fn is not None:
        return fn
    with _COMPILE_LOCK:
        fn = _COMPILED.get(key)
        if fn is None:
            import tilelang

            func = GENERATORS[kind][0](problem, tun, style)
            if style == "cpu":
                fn = tilelang.compile(func, target="c", execution_backend="cython")
            else:
                target = cuda_target(device)
                with target:
                    fn = tilelang.compile(func, target=target)
            _COMPILED[key] = fn
    return fn


@dataclass(frozen=True)
class _Packed:
    """Inputs laid out as whole chunks: [NC, C, H, D], sequences starting at chunk boundaries."""

    q: torch.Tensor
    k: torch.Tensor
    e: torch.Tensor
    v: torch.Tensor
    g: torch.Tensor          # chunk-local cumulative log decay [NC, C, H] float32
    beta: torch.Tensor       # [NC, C, H] float32
    gamma: torch.Tensor
    offsets: torch.Tensor    # [N + 1] int32: chunk range of each sequence
    keep: torch.Tensor | None  # varlen: which padded positions are real tokens


def _pack(xs: list[torch.Tensor], scalars: list[torch.Tensor], B: int, T: int, C: int,
          seqlens: list[int] | None) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor,
                                              torch.Tensor | None]:
    device = xs[0].device
    if seqlens is None:
        NCs = -(-T // C)
        pad = NCs * C - T

        def chunked(x: torch.Tensor) -> torch.Tensor:
            if pad:
                x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad) if x.dim() == 4 else (0, 0, 0, pad))
            return x.reshape(B * NCs, C, *x.shape[2:])

        offsets = torch.arange(B + 1, dtype=torch.int32, device=device) * NCs
        keep = None
    else:
        idx, starts = [], [0]
        for bos, eos in zip(seqlens[:-1], seqlens[1:]):
            n_chunks = -(-(eos - bos) // C)
            pos = torch.arange(bos, bos + n_chunks * C)
            idx.append(torch.where(pos < eos, pos, torch.full_like(pos, T)))
            starts.append(starts[-1] + n_chunks)
        index = torch.cat(idx).to(device)
        offsets = torch.tensor(starts, dtype=torch.int32, device=device)
        keep = index < T

        def chunked(x: torch.Tensor) -> torch.Tensor:
            # padding positions point at an appended zero row: they change nothing
            x = torch.cat((x[0], x.new_zeros(x[0, :1].shape)), dim=0).index_select(0, index)
            return x.reshape(-1, C, *x.shape[1:])

    return ([chunked(x).contiguous() for x in xs], [chunked(s).contiguous() for s in scalars],
            offsets, keep)


class _ForwardOnly:
    """The built op: forward only, refuses inputs that require grad."""

    def __init__(self, fn: Any, name: str) -> None:
        self._fn = fn
        self._name = name
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                           for a in list(args) + list(kwargs.values())):
            raise EdaError(f"backend {self._name!r} is forward only: got inputs that require grad; "
                           "use another backend for training or run under torch.no_grad()")
        return self._fn(*args, **kwargs)


def make_forward(problem: Problem, config: Config) -> EdaKernel:
    """The forward op for one (problem, config); kernels compile on the first call per device."""
    C, BK, BV = int(config["BT"]), int(config["BK"]), int(config["BV"])
    Kp, Vp = padded_dims(problem.K, problem.V, BK, BV)

    def run(q, k, v, e, g, beta, gamma, scale, initial_state, output_final_state, cu_seqlens,
            use_qk_l2norm_in_kernel):  # type: ignore[no-untyped-def]
        B, T, H, K = q.shape
        V = v.shape[-1]
        out_dtype = v.dtype
        style = "cpu" if q.device.type == "cpu" else "gpu"
        # the CPU build is for checking: it stores everything in float32 (the C target has no bf16)
        dt = torch.float32 if style == "cpu" else q.dtype
        q, k, e, v = (x.to(dt) for x in (q, k, e, v))
        seqlens = [int(x) for x in cu_seqlens.tolist()] if cu_seqlens is not None else None
        N = B if seqlens is None else len(seqlens) - 1
        if use_qk_l2norm_in_kernel:
            q, k, e = (l2norm(x.float()).to(dt) for x in (q, k, e))
        if Kp != K:
            q, k, e = (torch.nn.functional.pad(x, (0, Kp - K)) for x in (q, k, e))
        if Vp != V:
            v = torch.nn.functional.pad(v, (0, Vp - V))
        gz = g.float() if g is not None else torch.zeros(B, T, H, dtype=torch.float32, device=q.device)
        (qc, kc, ec, vc), (gc, bc, gmc), offsets, keep = _pack(
            [q, k, e, v], [gz, beta.float(), gamma.float()], B, T, C, seqlens)
        gc = gc.cumsum(1)
        NC = qc.shape[0]
        call = problem.replace(B=B, T=T, H=H, K=K, V=V, dtype=str(dt).replace("torch.", ""),
                               num_seqs=N if seqlens is not None else 0,
                               initial_state=initial_state is not None)
        (k1, kp1, tun1), (k2, kp2, tun2) = kernel_specs(call, config, scale)
        dev = q.device if style == "gpu" else None
        first = compile_kernel(k1, kp1, tun1, style, dev)
        rec = compile_kernel(k2, kp2, tun2, style, dev)
        n = 2 * C
        if initial_state is not None:
            h0 = initial_state.float()
            if Kp != K or Vp != V:
                h0 = torch.nn.functional.pad(h0, (0, Vp - V, 0, Kp - K))
            h0 = h0.contiguous()
        else:
            h0 = torch.zeros(N, H, Kp, Vp, dtype=torch.float32, device=q.device)
        o = torch.empty(NC, C, H, Vp, dtype=dt, device=q.device)
        ht = torch.empty(N, H, Kp, Vp, dtype=torch.float32, device=q.device)
        if k1 == "tm":
            # only the chunk inverse goes through memory; the recurrence forms Delta and Aqk
            Tm = torch.empty(NC, n, H, n, dtype=dt, device=q.device)
            first(kc, ec, gc, bc, gmc, Tm)
            rec(qc, kc, ec, vc, gc, bc, gmc, Tm, offsets, h0, o, ht)
        else:
            W = torch.empty(NC, n, H, Kp, dtype=dt, device=q.device)
            U = torch.empty(NC, n, H, Vp, dtype=dt, device=q.device)
            Aqk = torch.empty(NC, C, H, n, dtype=dt, device=q.device)
            first(qc, kc, ec, vc, gc, bc, gmc, W, U, Aqk)
            rec(qc, kc, ec, gc, W, U, Aqk, offsets, h0, o, ht)
        if keep is None:
            o = o.reshape(B, -1, H, Vp)[:, :T, :, :V]
        else:
            o = o.reshape(-1, H, Vp)[keep][None, :, :, :V]
        final = ht[:, :, :K, :V] if output_final_state else None
        return o.to(out_dtype), final

    return _ForwardOnly(run, "tilelang")  # type: ignore[return-value]


class TileLangBackend(Backend):
    """EDA's chunked forward generated by TileLang (CPU build for checks, CUDA build for speed)."""

    name = "tilelang"
    priority = 20
    supports_backward = False

    def is_available(self) -> tuple[bool, str]:
        try:
            import tilelang  # noqa: F401
        except Exception as err:  # any import failure means unavailable, not broken
            return False, f"tilelang cannot be imported: {type(err).__name__}: {err}"
        return True, ""

    def supports(self, problem: Problem) -> tuple[bool, str]:
        ok, why = super().supports(problem)
        if not ok:
            return ok, why
        if problem.dtype not in DTYPES:
            return False, f"tilelang computes {list(DTYPES)}, not {problem.dtype}"
        if problem.K > MAX_HEAD_DIM or problem.V > MAX_HEAD_DIM:
            return False, f"tilelang handles K and V up to {MAX_HEAD_DIM}, got K={problem.K}, V={problem.V}"
        if problem.device == "cuda" and torch.cuda.is_available():
            major, _ = torch.cuda.get_device_capability()
            if major < 8:
                return False, f"tilelang kernels need sm_80 or newer, got sm_{major}x"
        return True, ""

    def constraint_vars_names(self) -> list[str]:
        return ["intra_smem", "recurrence_smem", "tm_smem", "recurrence_tm_smem"]

    def constraint_vars(self, problem: Problem) -> Mapping[str, Any]:
        limit = DEFAULT_SMEM_LIMIT
        if problem.device == "cuda" and torch.cuda.is_available():
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            limit = int(getattr(props, "shared_memory_per_block_optin", limit) or limit)
        return {"intra_smem": intra_smem, "recurrence_smem": recurrence_smem, "tm_smem": tm_smem,
                "recurrence_tm_smem": recurrence_tm_smem, "smem_limit": limit}

    def _build(self, problem: Problem, config: Config) -> EdaKernel:
        return make_forward(problem, config)


def lower_for_cuda(kind: str, problem: KernelProblem, tun: Tunables, arch: str = "sm_90a") -> tuple[str, int]:
    """Lower kernel ``kind`` for a CUDA arch without a GPU: (CUDA source, dynamic shared bytes)."""
    import tilelang
    import tvm

    gen = GENERATORS[kind][0]
    target = tvm.target.Target({"kind": "cuda", "arch": arch})
    with target:
        art = tilelang.lower(gen(problem, tun, "gpu"), target=target)
    smem = 0
    for func in art.device_mod.functions.values():
        attrs = getattr(func, "attrs", None)
        if attrs is not None and "dyn_shared_memory_buf" in attrs:
            smem = max(smem, int(attrs["dyn_shared_memory_buf"]))
    return art.kernel_source, smem
