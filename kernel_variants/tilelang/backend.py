"""Backend ``tilelang``: EDA's chunked forward as two TileLang kernels (see ``kernels.py``).

Backward (``_TileLangEda``), TileLang kernels: W, U, Aqk recomputed by ``intra_kernel``; the state
entering each chunk (``states_kernel``); the state gradient, backwards (``dstates_kernel``); the
intra-chunk backward (``intra_bwd_kernel``: from the gradients of W, U, Qg, Aqk, Kd and the decay to
those of the packed inputs), with the per-chunk gradients of W, U, Qg, Aqk, Kd and the decay
between them (``chunk_grads_kernel``). In PyTorch: Qg, Kd and the decay (elementwise) and autograd
through the packing, padding, l2norm and scaling back to the inputs.
CUDA tensors run the GPU-style build in their dtype
(float32/float16/bfloat16); CPU tensors the CPU-style build (target ``"c"``), which stores every
dtype as float32 (TileLang's C target has no bfloat16) and returns the input dtype. TileLang is
imported lazily, so this module imports without it. Kernels are compiled once per process per
(kernel, padded K/V, dtype, scale, initial-state flag, tunables, device); batch, length, heads
and sequences are runtime sizes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from eda_tune.backends.base import Backend, EdaKernel
from eda_tune.inputs import l2norm
from eda_tune.problem import Config, Problem
from eda_tune.search.space import DEFAULT_SMEM_LIMIT
from kernel_variants.segments import (
    PiecesFunction,
    default_pieces,
    recurrence_programs,
    run_segmented,
    segmented_forward,
    with_tunables,
)
from kernel_variants.tilelang.kernels import (
    GENERATORS,
    KernelProblem,
    Tunables,
    chunk_grads_smem,
    dstates_smem,
    intra_bwd_smem,
    intra_smem,
    recurrence_smem,
    recurrence_tm_smem,
    row_len,
    states_smem,
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


def _flag(value: Any) -> bool:
    """A boolean tunable as the config holds it (YAML true/false, or a string from a CLI)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def kernel_specs(problem: Problem, config: Config | Mapping[str, Any], scale: float | None = None,
                 with_segments: bool = True) -> list[tuple[str, KernelProblem, Tunables]]:
    """The (kind, kernel problem, tunables) of the kernels one (problem, config) compiles:
    ``intra`` and ``recurrence`` (config ``design: wu``), or ``tm`` and ``recurrence_tm``
    (``design: tm``); for a training problem also the backward's ``states``, ``dstates``,
    ``chunk_grads`` and ``intra_bwd`` (and ``intra``, which the backward runs whatever the design).

    The first kernel does not depend on BV, N, scale or the initial state; its spec says so,
    so that callers (the compile cache, the lowering test) can share it. With ``segments`` > 1
    (and ``with_segments``) the kernels of its two passes follow: on the values widened by K
    columns and on the values, both from an initial state (``kernel_variants.segments``).
    """
    cfg = config.to_dict() if isinstance(config, Config) else dict(config)
    if with_segments and int(cfg.get("segments", 1)) > 1:
        base = kernel_specs(problem, cfg, scale, with_segments=False)
        passes = [kernel_specs(problem.replace(V=problem.V + problem.K, initial_state=True), cfg, scale, False),
                  kernel_specs(problem.replace(initial_state=True), cfg, scale, False)]
        return base + [spec for specs in passes for spec in specs if spec not in base]
    tun = Tunables(BT=int(cfg["BT"]), BK=int(cfg["BK"]), BV=int(cfg["BV"]), threads=int(cfg["threads"]),
                   num_stages=int(cfg["num_stages"]))
    Kp, Vp = padded_dims(problem.K, problem.V, tun.BK, tun.BV)
    dt = problem.dtype
    # the per-chunk kernel (intra or tm; the backward's recompute too) on its own thread count
    # where ``threads_intra`` names one (0: the config's threads)
    first_threads = int(cfg.get("threads_intra", 0)) or tun.threads
    intra = (KernelProblem(K=Kp, V=Vp, dtype=dt, scale=1.0, initial_state=False),
             Tunables(BT=tun.BT, BK=tun.BK, BV=tun.BK, threads=first_threads, num_stages=tun.num_stages))
    rec = KernelProblem(K=Kp, V=Vp, dtype=dt, scale=float(problem.K ** -0.5 if scale is None else scale),
                        initial_state=problem.initial_state)
    # the recurrences and the backward's scans tile V only: BK reaches them through the padded
    # K and V alone, so their specs carry BK 16 (one kernel for configs that differ only in BK)
    rec_tun = replace(tun, BK=16)
    # the tm recurrence and the backward's two scans load each next chunk ahead with ``prefetch``
    prefetch = _flag(cfg.get("prefetch", False))
    specs = ([("tm", *intra), ("recurrence_tm", rec, replace(rec_tun, prefetch=prefetch))]
             if str(cfg.get("design", "wu")) == "tm"
             else [("intra", *intra), ("recurrence", rec, rec_tun)])
    if problem.training:  # the backward's two scans (no scale, states always passed)
        kp = KernelProblem(K=Kp, V=Vp, dtype=dt, scale=1.0, initial_state=False)
        scan = Tunables(BT=tun.BT, BK=16, BV=tun.BV, threads=tun.threads, num_stages=1)
        ahead = replace(scan, prefetch=prefetch)
        specs += [("states", kp, ahead), ("dstates", kp, ahead), ("chunk_grads", kp, scan),
                  ("intra_bwd", kp, replace(scan, BK=tun.BK))]
        if specs[0][0] != "intra":  # the backward recomputes W, U, Aqk with the intra kernel
            specs.append(("intra", *intra))
    return specs


_COMPILED: dict[tuple[Any, ...], Any] = {}
_COMPILE_LOCK = threading.Lock()


def compile_kernel(kind: str, problem: KernelProblem, tun: Tunables, style: str,
                   device: torch.device | None = None) -> Any:
    """Compile (once per process) kernel ``kind`` (a key of ``kernels.GENERATORS``) for CPU or GPU."""
    if kind in ("intra", "tm", "states", "dstates", "intra_bwd"):
        # the intra kernel never sees N, scale, BV or initial_state; share its build across them
        problem = KernelProblem(K=problem.K, V=problem.V, dtype=problem.dtype, scale=1.0,
                                initial_state=False)
        if kind in ("intra", "tm", "intra_bwd"):
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


@functools.lru_cache(maxsize=64)
def _layout(B: int, T: int, C: int, seqlens: tuple[int, ...] | None, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(chunk offsets of the sequences [N + 1] int32, varlen: the token of every padded position
    (T for padding), and which of them are real). Cached per packing: a training step packs the
    inputs in the forward, again in the backward, and the output's gradient."""
    if seqlens is None:
        return torch.arange(B + 1, dtype=torch.int32, device=device) * -(-T // C), None, None
    idx, starts = [], [0]
    for bos, eos in zip(seqlens[:-1], seqlens[1:]):
        n_chunks = -(-(eos - bos) // C)
        pos = torch.arange(bos, bos + n_chunks * C)
        idx.append(torch.where(pos < eos, pos, torch.full_like(pos, T)))
        starts.append(starts[-1] + n_chunks)
    index = torch.cat(idx).to(device)
    return torch.tensor(starts, dtype=torch.int32, device=device), index, index < T


def _pack(xs: list[torch.Tensor], scalars: list[torch.Tensor], B: int, T: int, C: int,
          seqlens: list[int] | None) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor,
                                              torch.Tensor | None]:
    offsets, index, keep = _layout(B, T, C, None if seqlens is None else tuple(seqlens), xs[0].device)
    if index is None:
        NCs = -(-T // C)
        pad = NCs * C - T

        def chunked(x: torch.Tensor) -> torch.Tensor:
            if pad:
                x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad) if x.dim() == 4 else (0, 0, 0, pad))
            return x.reshape(B * NCs, C, *x.shape[2:])
    else:
        def chunked(x: torch.Tensor) -> torch.Tensor:
            # padding positions point at an appended zero row: they change nothing
            x = torch.cat((x[0], x.new_zeros(x[0, :1].shape)), dim=0).index_select(0, index)
            return x.reshape(-1, C, *x.shape[1:])

    return ([chunked(x).contiguous() for x in xs], [chunked(s).contiguous() for s in scalars],
            offsets, keep)


@dataclass(frozen=True)
class _Call:
    """What one call needs besides its tensors (the same for its forward and its backward)."""

    problem: Problem
    config: Config
    scale: float
    output_final_state: bool
    seqlens: list[int] | None
    l2norm: bool


def _prepare(c: _Call, q: torch.Tensor, k: torch.Tensor, e: torch.Tensor, v: torch.Tensor,
             g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor, dt: torch.dtype,
             scale_q: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor,
                                             torch.Tensor | None]:
    """Inputs as whole chunks, K and V padded to the tiles (differentiable: the backward's
    recompute runs it under autograd): ([q, k, e, v], [G, beta, gamma], chunk offsets, keep)."""
    C, BK, BV = int(c.config["BT"]), int(c.config["BK"]), int(c.config["BV"])
    B, T, H, K = q.shape
    V = v.shape[-1]
    Kp, Vp = padded_dims(K, V, BK, BV)
    q, k, e, v = (x.to(dt) for x in (q, k, e, v))
    if c.l2norm:
        q, k, e = (l2norm(x.float()).to(dt) for x in (q, k, e))
    if scale_q:
        q = q * c.scale
    if Kp != K:
        q, k, e = (torch.nn.functional.pad(x, (0, Kp - K)) for x in (q, k, e))
    if Vp != V:
        v = torch.nn.functional.pad(v, (0, Vp - V))
    gz = g.float() if g is not None else torch.zeros(B, T, H, dtype=torch.float32, device=q.device)
    xs, (gc, bc, gmc), offsets, keep = _pack([q, k, e, v], [gz, beta.float(), gamma.float()], B, T, C, c.seqlens)
    return xs, [gc.cumsum(1), bc, gmc], offsets, keep


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[NC, C, H] -> [NC, H, row_len(C)]: the recurrences' per-chunk rows, one contiguous row a
    chunk and head, zero-padded to a 128-byte TMA tile (kernels.row_len)."""
    NC, C, H = x.shape
    out = x.new_zeros(NC, H, row_len(C))
    out[:, :, :C] = x.transpose(1, 2)
    return out


def _pad_state(x: torch.Tensor | None, N: int, H: int, Kp: int, Vp: int, device: torch.device) -> torch.Tensor:
    if x is None:
        return torch.zeros(N, H, Kp, Vp, dtype=torch.float32, device=device)
    x = x.float()
    if x.shape[-2:] != (Kp, Vp):
        x = torch.nn.functional.pad(x, (0, Vp - x.shape[-1], 0, Kp - x.shape[-2]))
    return x.contiguous()


def _style_dtype(q: torch.Tensor) -> tuple[str, torch.dtype]:
    style = "cpu" if q.device.type == "cpu" else "gpu"
    # the CPU build is for checking: it stores everything in float32 (the C target has no bf16)
    return style, torch.float32 if style == "cpu" else q.dtype


def _forward(c: _Call, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, g: torch.Tensor | None,
             beta: torch.Tensor, gamma: torch.Tensor, initial_state: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    config = c.config
    C, BK, BV = int(config["BT"]), int(config["BK"]), int(config["BV"])
    B, T, H, K = q.shape
    V = v.shape[-1]
    Kp, Vp = padded_dims(K, V, BK, BV)
    out_dtype = v.dtype
    style, dt = _style_dtype(q)
    seqlens = c.seqlens
    N = B if seqlens is None else len(seqlens) - 1
    (qc, kc, ec, vc), (gc, bc, gmc), offsets, keep = _prepare(c, q, k, e, v, g, beta, gamma, dt)
    NC = qc.shape[0]
    call = c.problem.replace(B=B, T=T, H=H, K=K, V=V, dtype=str(dt).replace("torch.", ""),
                             num_seqs=N if seqlens is not None else 0,
                             initial_state=initial_state is not None)
    (k1, kp1, tun1), (k2, kp2, tun2) = kernel_specs(call, config, c.scale, with_segments=False)[:2]
    dev = q.device if style == "gpu" else None
    first = compile_kernel(k1, kp1, tun1, style, dev)
    rec = compile_kernel(k2, kp2, tun2, style, dev)
    n = 2 * C
    h0 = _pad_state(initial_state, N, H, Kp, Vp, q.device)
    o = torch.empty(NC, C, H, Vp, dtype=dt, device=q.device)
    ht = torch.empty(N, H, Kp, Vp, dtype=torch.float32, device=q.device)
    if k1 == "tm":
        # only the chunk inverse goes through memory; the recurrence forms Delta and Aqk
        Tm = torch.empty(NC, n, H, n, dtype=dt, device=q.device)
        first(kc, ec, gc, bc, gmc, Tm)
        rec(qc, kc, ec, vc, *(_rows(x) for x in (gc, bc, gmc)), Tm, offsets, h0, o, ht)
    else:
        W = torch.empty(NC, n, H, Kp, dtype=dt, device=q.device)
        U = torch.empty(NC, n, H, Vp, dtype=dt, device=q.device)
        Aqk = torch.empty(NC, C, H, n, dtype=dt, device=q.device)
        first(qc, kc, ec, vc, gc, bc, gmc, W, U, Aqk)
        rec(qc, kc, ec, _rows(gc), W, U, Aqk, offsets, h0, o, ht)
    if keep is None:
        o = o.reshape(B, -1, H, Vp)[:, :T, :, :V]
    else:
        o = o.reshape(-1, H, Vp)[keep][None, :, :, :V]
    final = ht[:, :, :K, :V] if c.output_final_state else None
    return o.to(out_dtype), final


def _backward(c: _Call, inputs: list[torch.Tensor | None], do: torch.Tensor | None, dht: torch.Tensor | None,
              exit_grads: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[torch.Tensor | None]:
    """Gradients of q, k, v, e, g, beta, gamma, initial_state (see the module docstring). Rows of
    a chunk in the kernels' erase-first order throughout. ``exit_grads`` (the pieces of
    ``segments`` as sequences): the state-gradient scan runs with no gradient leaving the
    sequences, ``exit_grads`` maps what it leaves at their starts to the gradients leaving them
    (``kernel_variants.segments.exit_gradients``), and it runs again with those."""
    q, k, v, e, g, beta, gamma, h0 = inputs
    assert q is not None and k is not None and v is not None and e is not None
    assert beta is not None and gamma is not None
    C, BK, BV = int(c.config["BT"]), int(c.config["BK"]), int(c.config["BV"])
    B, T, H, K = q.shape
    V = v.shape[-1]
    Kp, Vp = padded_dims(K, V, BK, BV)
    n = 2 * C
    style, dt = _style_dtype(q)
    dts = str(dt).replace("torch.", "")
    dev = q.device if style == "gpu" else None
    N = B if c.seqlens is None else len(c.seqlens) - 1
    leaves = [x.detach().requires_grad_(True) if x is not None else None for x in (q, k, v, e, g, beta, gamma)]
    lq, lk, lv, le, lg, lb, lgm = leaves
    assert lq is not None and lk is not None and lv is not None and le is not None
    assert lb is not None and lgm is not None
    with torch.enable_grad():  # the packing, padding, l2norm, scaling and cumsum: PyTorch's autograd
        packed, scalars, offsets, _ = _prepare(c, lq, lk, le, lv, lg, lb, lgm, dt, scale_q=True)
    qc, kc, ec, vc = (x.detach().contiguous() for x in packed)
    gc, bc, gmc = (x.detach().contiguous() for x in scalars)
    NC = qc.shape[0]
    # the kernels kernel_specs names for a training call (the lowering test walks the same specs)
    specs = {kind: (kp, tun) for kind, kp, tun in
             kernel_specs(c.problem.replace(K=K, V=V, dtype=dts, training=True), c.config, with_segments=False)}

    def kernel(kind: str) -> Any:
        return compile_kernel(kind, *specs[kind], style, dev)

    # W, U, Aqk recomputed by the forward's intra-chunk kernel (q already scaled here)
    W = torch.empty(NC, n, H, Kp, dtype=dt, device=q.device)
    U = torch.empty(NC, n, H, Vp, dtype=dt, device=q.device)
    Aqk = torch.empty(NC, C, H, n, dtype=dt, device=q.device)
    kernel("intra")(qc, kc, ec, vc, gc, bc, gmc, W, U, Aqk)
    g_last = gc[:, -1]                                                 # [NC, H]
    # Kd = [e; k] e^(G_last - G) and Qg = q e^G: one multiply each into the storage dtype (PyTorch
    # multiplies in float32 and rounds once on the store, as a float32 copy then a cast would)
    fac = (g_last[:, None] - gc).exp()[..., None]                      # [NC, C, H, 1]
    Kd = torch.empty(NC, n, H, ec.shape[-1], dtype=dt, device=q.device)
    torch.mul(ec, fac, out=Kd[:, :C])
    torch.mul(kc, fac, out=Kd[:, C:])
    Qg = torch.empty_like(qc)
    torch.mul(qc, gc.exp()[..., None], out=Qg)
    dec = g_last.exp().contiguous()
    hs = torch.empty(NC, H, Kp, Vp, dtype=dt, device=q.device)  # states in the storage dtype, as fla's h
    kernel("states")(W, U, Kd, dec, offsets, _pad_state(h0, N, H, Kp, Vp, q.device), hs)
    if do is None:
        do = torch.zeros(B, T, H, V, dtype=v.dtype, device=q.device)
    dov = torch.nn.functional.pad(do.to(dt), (0, Vp - V)) if Vp != V else do.to(dt)
    (doc,), _, _, _ = _pack([dov], [], B, T, C, c.seqlens)
    dhs = torch.empty_like(hs)
    dh0 = torch.empty(N, H, Kp, Vp, dtype=torch.float32, device=q.device)
    if exit_grads is not None:  # first scan: each piece's own part of the gradient entering it
        kernel("dstates")(W, Kd, Qg, Aqk, dec, doc, offsets, _pad_state(None, N, H, Kp, Vp, q.device), dhs, dh0)
        dht = exit_grads(dh0[:, :, :K, :V])
    kernel("dstates")(W, Kd, Qg, Aqk, dec, doc, offsets, _pad_state(dht, N, H, Kp, Vp, q.device), dhs, dh0)
    # the per-chunk gradients of W, U, Qg, Aqk, Kd and the decay, every chunk in parallel
    f32 = torch.float32
    dWk, dKdk = (torch.empty(NC, n, H, Kp, dtype=f32, device=q.device) for _ in range(2))
    dUk = torch.empty(NC, n, H, Vp, dtype=f32, device=q.device)
    dQgk = torch.empty(NC, C, H, Kp, dtype=f32, device=q.device)
    dAqkk = torch.empty(NC, C, H, n, dtype=f32, device=q.device)
    ddec = torch.empty(NC, H, dtype=f32, device=q.device)
    kernel("chunk_grads")(hs, dhs, W, U, Kd, Aqk, doc, dWk, dUk, dQgk, dAqkk, dKdk, ddec)
    # the intra-chunk backward kernel: to the packed inputs, then autograd through the packing
    # the input gradients in the storage dtype (the kernel casts its float32 sums on the store)
    dq_, dk_, de_ = (torch.empty(NC, C, H, Kp, dtype=dt, device=q.device) for _ in range(3))
    dv_ = torch.empty(NC, C, H, Vp, dtype=dt, device=q.device)
    dg_, db_, dgm_ = (torch.empty(NC, C, H, dtype=f32, device=q.device) for _ in range(3))
    kernel("intra_bwd")(
        qc, kc, ec, vc, gc, bc, gmc, dWk, dUk, dQgk, dAqkk, dKdk, ddec, dq_, dk_, de_, dv_, dg_, db_, dgm_)
    want = [x for x in leaves if x is not None]
    # without g its zeros are constants (no graph): left out
    pairs = [(y, gy) for y, gy in zip([*packed, *scalars], [dq_, dk_, de_, dv_, dg_, db_, dgm_])
             if y.requires_grad]
    got = iter(torch.autograd.grad([y for y, _ in pairs], want, [gy for _, gy in pairs], allow_unused=True))
    out: list[torch.Tensor | None] = []
    for x, orig in zip(leaves, (q, k, v, e, g, beta, gamma)):
        gx = next(got) if x is not None else None
        if gx is None and x is not None:
            gx = torch.zeros_like(x)
        out.append(gx.to(orig.dtype) if gx is not None and orig is not None else gx)
    out.append(dh0[:, :, :K, :V].to(h0.dtype) if h0 is not None else None)
    return out


class _TileLangEda(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, c: _Call, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor,
                g: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor,
                initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctx.c = c
        ctx.save_for_backward(q, k, v, e, g, beta, gamma, initial_state)
        return _forward(c, q, k, v, e, g, beta, gamma, initial_state)

    @staticmethod
    def backward(ctx: Any, do: torch.Tensor | None, dht: torch.Tensor | None) -> tuple[Any, ...]:
        grads = _backward(ctx.c, list(ctx.saved_tensors), do, dht)
        return (None, *grads)


def make_forward(problem: Problem, config: Config) -> EdaKernel:
    """The op for one (problem, config), differentiable in every tensor input; kernels compile on
    the first call per device."""
    segments = int(config.to_dict().get("segments", 1))

    def run(q, k, v, e, g, beta, gamma, scale, initial_state, output_final_state, cu_seqlens,
            use_qk_l2norm_in_kernel):  # type: ignore[no-untyped-def]
        seqlens = [int(x) for x in cu_seqlens.tolist()] if cu_seqlens is not None else None
        c = _Call(problem=problem, config=config, scale=float(scale), output_final_state=bool(output_final_state),
                  seqlens=seqlens, l2norm=bool(use_qk_l2norm_in_kernel))
        xs = (q, k, v, e, g, beta, gamma, initial_state)
        grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in xs)
        if segments > 1:
            bounds = tuple(seqlens) if seqlens is not None else None
            BT = int(config["BT"])

            def pieces(qf, kf, vf, ef, gf, bf, gmf, hs, final, need_o, seg, cu):  # type: ignore[no-untyped-def]
                return _forward(replace(c, output_final_state=bool(final), seqlens=list(seg)),
                                qf, kf, vf, ef, gf, bf, gmf, hs)

            if not grad:
                return run_segmented(pieces, *xs, bool(output_final_state), bounds, segments, BT)

            # one backward over the pieces (kernel_variants.segments.PiecesFunction)
            def forward(*ins):  # type: ignore[no-untyped-def]
                return segmented_forward(pieces, *ins, bounds, segments, BT)

            def backward(qf, kf, vf, ef, gf, bf, gmf, starts, seg, cu, do, exit_grads):  # type: ignore[no-untyped-def]
                return _backward(replace(c, output_final_state=False, seqlens=list(seg)),
                                 [qf, kf, vf, ef, gf, bf, gmf, starts], do, None, exit_grads=exit_grads)

            return PiecesFunction.apply(forward, backward, *xs, bool(output_final_state))
        if grad:
            o, final = _TileLangEda.apply(c, *xs)
            return o, (final if output_final_state else None)
        return _forward(c, *xs)

    return run  # type: ignore[return-value]


class TileLangBackend(Backend):
    """EDA's chunked forward generated by TileLang (CPU build for checks, CUDA build for speed)."""

    name = "tilelang"
    priority = 20
    supports_backward = True

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

    def default_config(self, problem: Problem) -> Config:
        """The search space's default, cut into ``segments`` where 32 or fewer programs run the
        recurrence on sequences of 16K tokens or more (``kernel_variants.segments.default_pieces``;
        S4, 16 programs: forward 8.49 -> 5.22 ms with 16 pieces on an H200, run 40; S2, 64
        programs, was slower cut: 8.98 against 5.10 with 16 pieces), where the space admits it.
        Training too: with the backward over the pieces (``PiecesFunction``; its gpu test passed in
        run 45) one S4 step took 13.34 ms of kernels with 16 pieces (torch.profiler, run 45) where
        the uncut step had timed 26.06 ms (bench, run 35); not yet benched side by side.

        A forward-only GPU problem gets ``design: tm`` with ``prefetch`` and ``threads_intra: 32``
        (H100, run 90, S1: 2.013 ms without either, 1.456 with prefetch, 1.415 with both; at BV 32
        2.369 -> 2.037 with prefetch), and BV 32 where 64 or fewer programs would
        run its recurrence at BV 64 (S2: 64). H200, ``benchmarks/gpu_tilelang_check.py`` (runs 85
        and 89), ms, wu BV 64 (the space's default) / tm BV 64 / tm BV 32, all at BT 16: S1 2.197 /
        2.016 / 2.403; S2 5.282 / 5.731 / 3.825; S3 2.187 / 1.929 / 1.951; S4 (16 pieces) 4.764 /
        4.538 / 5.079. Training keeps wu (the backward runs the intra kernel anyway; tm is not
        timed there)."""
        cfg = super().default_config(problem)
        gpu_forward = problem.device == "cuda" and not problem.training
        if gpu_forward:
            # the recurrence loading each next chunk ahead, the inverse kernel on one warp: H100,
            # run 90 (``gpu_tilelang_check.py``, S1, BT 16, BV 64): 2.013 -> 1.456 -> 1.415 ms
            cfg = with_tunables(self, problem, cfg, design="tm")
            cfg = with_tunables(self, problem, cfg, prefetch=True, threads_intra=32)
        cfg = with_tunables(self, problem, cfg, segments=default_pieces(problem, int(cfg["BV"]), max_programs=32))
        if gpu_forward and recurrence_programs(problem, int(cfg["BV"])) * int(cfg["segments"]) <= 64:
            cfg = with_tunables(self, problem, cfg, BV=32)
        return cfg

    def constraint_vars_names(self) -> list[str]:
        return ["intra_smem", "recurrence_smem", "tm_smem", "recurrence_tm_smem", "states_smem", "dstates_smem",
                "intra_bwd_smem", "chunk_grads_smem"]

    def constraint_vars(self, problem: Problem) -> Mapping[str, Any]:
        limit = DEFAULT_SMEM_LIMIT
        if problem.device == "cuda" and torch.cuda.is_available():
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            limit = int(getattr(props, "shared_memory_per_block_optin", limit) or limit)
        return {"intra_smem": intra_smem, "recurrence_smem": recurrence_smem, "tm_smem": tm_smem,
                "recurrence_tm_smem": recurrence_tm_smem, "states_smem": states_smem,
                "dstates_smem": dstates_smem, "intra_bwd_smem": intra_bwd_smem,
                "chunk_grads_smem": chunk_grads_smem, "smem_limit": limit}

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
