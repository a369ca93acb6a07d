"""The two floors of docs/BENCHMARKS.md: bytes that must move over the measured copy bandwidth,
and the chunked form's FLOPs over the measured matmul rate. A run measures both ceilings once on
its device (:func:`measure_ceilings`); a timing is then reported as time over the larger floor.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from eda_tune.problem import Problem

#: Chunk length the FLOP count assumes (fla's and the torch backend's default).
FLOOR_CHUNK = 64
#: FLOPs of forward + backward over those of the forward: the usual 1 + 2 (no recompute counted).
BWD_FLOP_FACTOR = 3.0


@dataclass(frozen=True)
class Ceilings:
    """What the device was measured to do, once per run."""

    device: str
    copy_gbps: float  # read + write bytes per second over a large device-to-device copy, GB/s
    matmul_tflops: float  # dense matmul rate, TFLOP/s
    matmul_dtype: str
    copy_bytes: int
    matmul_shape: tuple[int, int, int]
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median_ms(fn: Any, device: str) -> tuple[float, str]:
    from eda_tune.bench.timing import time_fn

    fn()
    t = time_fn(fn, device=device, warmup_ms=25.0 if device == "cuda" else 10.0,
                rep_ms=200.0 if device == "cuda" else 100.0)
    return t.median_ms, t.method


def measure_ceilings(device: str = "cuda", copy_mib: int | None = None, matmul_n: int | None = None
                     ) -> Ceilings:
    """Measure the copy bandwidth and the matmul rate of ``device``.

    CUDA: a 1 GiB copy (far above L2) and a bf16 8192^3 product. CPU: 256 MiB and a float32 1024^3
    product (bf16 matmul on CPU is emulated and says nothing about the machine).
    """
    cuda = device == "cuda"
    copy_mib = copy_mib or (1024 if cuda else 256)
    n = matmul_n or (8192 if cuda else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    numel = copy_mib * 2**20 // 4
    src = torch.empty(numel, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    copy_ms, method = _median_ms(lambda: dst.copy_(src), device)
    copy_bytes = 2 * numel * 4  # read + write
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    mm_ms, _ = _median_ms(lambda: a @ b, device)
    if cuda:
        torch.cuda.empty_cache()
    return Ceilings(device=device, copy_gbps=copy_bytes / (copy_ms * 1e-3) / 1e9,
                    matmul_tflops=2.0 * n**3 / (mm_ms * 1e-3) / 1e12,
                    matmul_dtype=str(dtype).replace("torch.", ""), copy_bytes=copy_bytes,
                    matmul_shape=(n, n, n), method=method)


def nominal_ceilings(device: str = "cuda") -> Ceilings:
    """Placeholder ceilings (H100 SXM figures of BENCHMARKS.md) for when measuring is skipped."""
    return Ceilings(device=device, copy_gbps=3000.0, matmul_tflops=691.0, matmul_dtype="bfloat16",
                    copy_bytes=0, matmul_shape=(0, 0, 0), method="nominal (not measured)")


def _elt(problem: Problem) -> int:
    return torch.empty((), dtype=problem.torch_dtype).element_size()


def bytes_moved(problem: Problem, backward: bool = False) -> int:
    """Bytes that must move: q, k, e, v read once and o written once (the [B, T, H] strengths and
    gates and any state are left out: under 2% at the standard shapes). With ``backward`` add the
    backward's own minimum: q, k, e, v and do read, dq, dk, de, dv written."""
    B, T, H, K, V = problem.B, problem.T, problem.H, problem.K, problem.V
    elt = _elt(problem)
    fwd = (3 * K + V) * B * T * H * elt + V * B * T * H * elt
    if not backward:
        return fwd
    bwd = (3 * K + 2 * V) * B * T * H * elt + (3 * K + V) * B * T * H * elt
    return fwd + bwd


def chunk_flops(problem: Problem, chunk: int = FLOOR_CHUNK, backward: bool = False) -> float:
    """FLOPs of the chunked form of EDA_MATH.md at chunk length ``chunk`` (n = 2C micro-rows).

    Per chunk and head: kappa kappa^T (2 n^2 K), the unit-triangular inverse (n^3 / 3), W (2 n^2 K),
    U over the C write columns only (2 n C V), W S_0 (2 n K V), Q S_0 (2 C K V), Q kappa^T
    (2 C n K), the masked product with Delta (2 C n V) and the state update kappa^T Delta
    (2 n K V). Elementwise work is left out. Forward + backward is :data:`BWD_FLOP_FACTOR` times it.
    """
    C, K, V = chunk, problem.K, problem.V
    n = 2 * C
    per_chunk = (2 * n * n * K + n**3 / 3 + 2 * n * n * K + 2 * n * C * V + 2 * n * K * V
                 + 2 * C * K * V + 2 * C * n * K + 2 * C * n * V + 2 * n * K * V)
    if problem.varlen:  # each sequence ends in its own (ragged) chunk: about N more chunks
        chunks = math.ceil(problem.T / C) + problem.N
    else:
        chunks = problem.B * math.ceil(problem.T / C)
    total = per_chunk * chunks * problem.H
    return total * (BWD_FLOP_FACTOR if backward else 1.0)


def floors(problem: Problem, ceilings: Ceilings, backward: bool = False,
           chunk: int = FLOOR_CHUNK) -> dict[str, Any]:
    """The byte floor, the FLOP floor and the larger of the two, in ms."""
    nbytes = bytes_moved(problem, backward)
    flops = chunk_flops(problem, chunk, backward)
    bytes_ms = nbytes / (ceilings.copy_gbps * 1e9) * 1e3
    flops_ms = flops / (ceilings.matmul_tflops * 1e12) * 1e3
    return {"bytes": float(nbytes), "flops": float(flops), "bytes_floor_ms": bytes_ms,
            "flops_floor_ms": flops_ms, "floor_ms": max(bytes_ms, flops_ms),
            "bound": "memory" if bytes_ms >= flops_ms else "compute", "floor_chunk": float(chunk)}
