"""EDA's chunked forward written in TileLang: two kernel generators and their shared-memory estimate.

Math: ``docs/EDA_MATH.md`` ("Chunked form"). Each kernel generator takes the problem
(:class:`KernelProblem`: padded K/V, storage dtype, scale, flags) and the tunables
(:class:`Tunables`: BT, BK, BV, threads, num_stages) as two separate groups, asserts the
constraints between them and returns a ``@T.prim_func``. ``style`` switches between

- ``"gpu"``: fragments, ``T.Parallel``, ``T.gemm`` and ``T.Pipelined`` loops (lowered for CUDA);
- ``"cpu"``: local buffers, ``T.grid``, shared scope ``"shared"`` and serial loop GEMMs (target
  ``"c"``), the same algorithm so that CI can check it without a GPU.

Row order. A chunk of C = BT tokens has n = 2C micro-rows. Instead of interleaving erase and
write rows [e_1, k_1, e_2, k_2, ...] the kernels keep them as two blocks [e_1..e_C; k_1..k_C],
so that both are plain tile copies and the value-free erase rows form a block of zeros in nu.
Row r then sits at interleaved position ``pos(r) = 2 (r mod C) + r div C``; the strictly-lower
mask of the chunked form becomes ``pos(s) < pos(r)``. The matrix N = diag(b) L is still
nilpotent (it is a permutation of a strictly lower triangular matrix), so
``(I + N)^-1 = prod_{i < ceil(log2 n)} (I + (-N)^(2^i))`` holds unchanged: the solve is a
handful of n x n matrix products ("doubling"), which suits tensor cores.

Kernels:

1. ``intra_kernel`` (grid: chunks x heads; tiles K and V by BK) computes for every chunk, independently of the state,
   W = X diag(b e^G) kappa [n, K], U = X[:, C:] diag(beta) v [n, V] and the masked, decayed
   query-key scores Aqk [C, n], with X = (I + N)^-1.
2. ``recurrence_kernel`` (grid: V tiles x sequences x heads) walks the chunks of one sequence:
   Delta = U - W S, O = scale ((q e^Gq) S + Aqk Delta), S = e^{G_last} S + (kappa e^{G_last-G})^T Delta.

Layouts (all contiguous): q, k, e [NC, C, H, K]; v [NC, C, H, V]; G (chunk-local cumulative log
decay), beta, gamma [NC, C, H] float32; W [NC, n, H, K]; U [NC, n, H, V]; Aqk [NC, C, H, n];
o [NC, C, H, V]; chunk offsets of the sequences [N + 1] int32; states [N, H, K, V] float32.
"""

# No ``from __future__ import annotations`` here: TileLang reads the prim_funcs' annotations
# (tensor shapes over closure variables) as live objects, and string annotations cannot see them.
import math
from dataclasses import dataclass
from typing import Any

#: dtypes the kernels store q/k/e/v/W/U/Aqk in; math and the state are float32.
STORAGE_DTYPES = ("float32", "float16", "bfloat16")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
#: dtype of the n x n solve; float32 (tf32 on tensor cores) keeps the doubling products accurate.
SOLVE_DTYPE = "float32"


def row_len(C: int) -> int:
    """Columns of the recurrences' per-chunk rows (G, beta, gamma: [NC, H, row_len(C)] fp32, the
    first C used). A pipelined copy is a TMA load, whose shared-memory destination must be 128-byte
    aligned in every stage: a 16-float row (64 bytes) put the second stage's copy 64 bytes off
    (misaligned address on an H200, 2026-12-03), so rows are padded to 32 floats."""
    return max(C, 32)
STYLES = ("cpu", "gpu")


@dataclass(frozen=True)
class KernelProblem:
    """What the kernels depend on besides the tunables (chunks, heads, sequences are runtime sizes).

    K, V are the padded head dims (multiples of BK and BV); ``dtype`` the storage dtype.
    """

    K: int
    V: int
    dtype: str
    scale: float
    initial_state: bool


@dataclass(frozen=True)
class Tunables:
    """BT: chunk length C; BK: K and V tile of the intra kernel; BV: V tile of the recurrence;
    threads per block; num_stages of the pipelined tile loops (GPU)."""

    BT: int
    BK: int
    BV: int
    threads: int
    num_stages: int
    #: the tm recurrence loads each next chunk's tiles ahead (``recurrence_tm_kernel``)
    prefetch: bool = False


def solve_steps(n: int) -> int:
    """Doubling steps after X = I + P: X covers sum_{j < 2^(steps+1)} P^j; P^n = 0."""
    return max(math.ceil(math.log2(n)) - 1, 0)


def _check(problem: KernelProblem, tun: Tunables, style: str) -> None:
    assert style in STYLES, style
    assert problem.dtype in STORAGE_DTYPES, problem.dtype
    assert tun.BT in (16, 32, 64), tun.BT
    assert problem.K % tun.BK == 0, (problem.K, tun.BK)
    assert problem.V % tun.BV == 0 and problem.V % tun.BK == 0, (problem.V, tun.BK, tun.BV)
    assert tun.BK % 16 == 0 and tun.BV % 16 == 0, (tun.BK, tun.BV)
    assert tun.num_stages >= 1, tun.num_stages
    if style == "gpu":
        assert tun.threads % 32 == 0, tun.threads


# ---------------------------------------------------------------------------------------------
# Shared memory, as the kernels below allocate it (bytes; pipelined tiles counted per stage).
# ---------------------------------------------------------------------------------------------

def intra_smem(K: int, V: int, dtype: str, BT: int, BK: int, num_stages: int) -> int:
    """TileLang reuses shared memory between phases whose buffers are not live together."""
    C, n, db = BT, 2 * BT, DTYPE_BYTES[dtype]
    sb = DTYPE_BYTES[SOLVE_DTYPE]
    stages = max(num_stages, 1)
    gram = stages * (n * BK + C * BK) * db           # kappa and q tiles of the Gram loop
    solve = 3 * n * n * sb                           # P, its transpose, X
    rhs = n * n * sb + (n * BK + C * BK + n * C) * sb  # X, scaled kappa and v tiles, X[:, C:]
    rows = 2 * n * 4                                 # G and b per row
    slack = 2048                                     # seen: phases do not always share perfectly
    return rows + max(gram, solve, rhs) + slack


def recurrence_smem(K: int, V: int, dtype: str, BT: int, BV: int, num_stages: int) -> int:
    C, n, db = BT, 2 * BT, DTYPE_BYTES[dtype]
    stages = max(num_stages, 1)
    tiles = stages * (n * K + 3 * C * K + C * n + n * BV) * db  # W, e, k, q, Aqk, U per chunk
    rows = stages * row_len(C) * 4                              # G (padded rows)
    work = (K * BV + n * K + C * K) * db                        # S, scaled kappa and q
    delta = stages * n * BV * db                                # Delta (pipelined too)
    return tiles + rows + work + delta + 2048


# ---------------------------------------------------------------------------------------------
# Style switch
# ---------------------------------------------------------------------------------------------

class _Style:
    """The few constructs that differ between the CPU ("c") and the GPU style."""

    def __init__(self, style: str, threads: int, num_stages: int) -> None:
        import tilelang.language as T

        self.T = T
        self.cpu = style == "cpu"
        self.threads = 1 if self.cpu else threads
        self.num_stages = num_stages

    def par(self, *extents: Any) -> Any:
        return self.T.grid(*extents) if self.cpu else self.T.Parallel(*extents)

    def frag(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        return self.T.alloc_local(shape, dtype) if self.cpu else self.T.alloc_fragment(shape, dtype)

    def shared(self, shape: tuple[int, ...], dtype: str) -> Any:
        if self.cpu:
            return self.T.alloc_shared(shape, dtype, scope="shared")
        return self.T.alloc_shared(shape, dtype)

    def loop(self, extent: Any) -> Any:
        # num_stages > 1: TileLang's warp-specialized TMA pipeline on sm_90a. Right on an H200
        # since the recurrences' rewrite (``_out_state_macro``) and row padding (``row_len``),
        # forward, run 81; slower than num_stages 1 there, so the search space admits 1 only.
        if self.cpu or self.num_stages <= 1:
            return self.T.serial(extent)
        return self.T.Pipelined(extent, num_stages=self.num_stages)


def _gemm_macro(sty: _Style) -> Any:
    T = sty.T
    cpu = sty.cpu

    @T.macro
    def gemm(A, B, Cacc, transpose_A=False, transpose_B=False, clear=False):  # type: ignore[no-untyped-def]
        """Cacc (+)= op(A) @ op(B), accumulated in float32."""
        if cpu:
            M = Cacc.shape[0]
            Nn = Cacc.shape[1]
            Kr = A.shape[0] if transpose_A else A.shape[1]
            if clear:
                for i, j in T.grid(M, Nn):
                    Cacc[i, j] = T.float32(0)
            for i, j, kk in T.grid(M, Nn, Kr):
                Cacc[i, j] += (T.cast(A[kk, i] if transpose_A else A[i, kk], "float32")
                               * T.cast(B[j, kk] if transpose_B else B[kk, j], "float32"))
        else:
            T.gemm(A, B, Cacc, transpose_A=transpose_A, transpose_B=transpose_B, clear_accum=clear)

    return gemm


def _begin(problem: KernelProblem, tun: Tunables, style: str) -> tuple[Any, _Style, Any]:
    """What every generator starts with: the checks, TileLang's language module, the style switch
    and the GEMM macro."""
    _check(problem, tun, style)
    import tilelang.language as T

    sty = _Style(style, tun.threads, tun.num_stages)
    return T, sty, _gemm_macro(sty)


def _solve_macros(sty: _Style, gemm: Any, n: int, C: int, steps: int) -> tuple[Any, Any]:
    """The two halves of the chunk solve, shared by ``intra_kernel`` and ``tm_kernel``:
    ``start(A, g, b, P, Pt, X)`` builds P = -diag(b) L (L: the Gram matrix A masked to earlier rows,
    pos(s) < pos(r), and decayed), its transpose and X = I + P; ``double(P, Pt, X, acc)`` runs the
    doubling products X = prod_i (I + P^(2^i)) (P <- P P; X <- X + P X)."""
    T = sty.T

    @T.macro
    def start(b_A, b_g, b_b, b_P, b_Pt, b_X):  # type: ignore[no-untyped-def]
        # the decay exponent is clamped at 0: exact where the mask keeps it, never inf elsewhere
        for r, s in sty.par(n, n):
            b_P[r, s] = T.if_then_else(
                2 * (s % C) + s // C < 2 * (r % C) + r // C,
                -b_b[r] * b_A[r, s] * T.exp(T.min(b_g[r] - b_g[s], T.float32(0))),
                T.float32(0))
        for r, s in sty.par(n, n):
            b_Pt[s, r] = b_P[r, s]
            b_X[r, s] = b_P[r, s] + T.if_then_else(r == s, T.float32(1), T.float32(0))

    @T.macro
    def double(b_P, b_Pt, b_X, b_acc):  # type: ignore[no-untyped-def]
        for _ in T.serial(steps):
            gemm(b_P, b_Pt, b_acc, transpose_B=True, clear=True)
            for r, s in sty.par(n, n):
                b_P[r, s] = b_acc[r, s]
            for r, s in sty.par(n, n):
                b_Pt[s, r] = b_P[r, s]
            gemm(b_P, b_X, b_acc, clear=True)
            for r, s in sty.par(n, n):
                b_X[r, s] = b_X[r, s] + b_acc[r, s]

    return start, double


def _out_state_macro(sty: _Style, gemm: Any, n: int, C: int, K: int, BV: int, scale: float, dt: str,
                     in_place: bool = False) -> Any:
    """The end of a chunk step, shared by both recurrences: o = scale ((q e^Gq) S + Aqk Delta)
    into O[c, :, i_h, V tile], then S = e^{G_last} S + (kappa e^{G_last - G})^T Delta (kappa: the
    chunk's e rows, then its k rows), and the copy of S (b_Ss, the storage dtype) that the next
    chunk's products read.

    Written for TileLang 0.1.15's warp-specialized pipeline (num_stages > 1 on sm_90a): the loaded
    tiles (q, e, k, G) are only read, the scaled q and kappa go to buffers of their own (b_qs,
    b_ks), and b_Ss is made here, after the update (made at the top of the step, the pipeline gave
    it to the producer threads, which hold only the initial state).

    ``in_place`` (unpipelined builds of the wu recurrence): b_ks already holds the chunk's raw
    kappa and is scaled where it is, as is q (the caller passes b_q as b_qs; b_e, b_k unused): less shared
    memory than the pipelined form, which made num_stages 1 slower (H200, run 82: S1 2.19 -> 2.37 ms)."""
    T = sty.T
    f32 = "float32"

    @T.macro
    def out_and_state(b_q, b_qs, b_Ss, b_Aqk, b_D, b_o, b_e, b_k, b_ks, b_S, b_gc, O, c, i_h, i_v):  # type: ignore[no-untyped-def]
        for i, d in sty.par(C, K):
            b_qs[i, d] = T.cast(T.cast(b_q[i, d], f32) * T.exp(b_gc[i]), dt)
        gemm(b_qs, b_Ss, b_o, clear=True)
        gemm(b_Aqk, b_D, b_o)
        for i, d in sty.par(C, BV):
            O[c, i, i_h, i_v * BV + d] = T.cast(b_o[i, d] * scale, dt)
        if in_place:  # a Python constant: one branch is generated
            for r, d in sty.par(n, K):
                b_ks[r, d] = T.cast(T.cast(b_ks[r, d], f32) * T.exp(b_gc[C - 1] - b_gc[r % C]), dt)
        else:
            for i, d in sty.par(C, K):
                b_ks[i, d] = T.cast(T.cast(b_e[i, d], f32) * T.exp(b_gc[C - 1] - b_gc[i]), dt)
                b_ks[C + i, d] = T.cast(T.cast(b_k[i, d], f32) * T.exp(b_gc[C - 1] - b_gc[i]), dt)
        for i, d in sty.par(K, BV):
            b_S[i, d] = b_S[i, d] * T.exp(b_gc[C - 1])
        gemm(b_ks, b_D, b_S, transpose_A=True)
        for i, d in sty.par(K, BV):
            b_Ss[i, d] = T.cast(b_S[i, d], dt)

    return out_and_state


# ---------------------------------------------------------------------------------------------
# Kernel 1: the intra-chunk part
# ---------------------------------------------------------------------------------------------

def intra_kernel(problem: KernelProblem, tun: Tunables, style: str = "gpu") -> Any:
    """W [NC, n, H, K], U [NC, n, H, V], Aqk [NC, C, H, n] from q, k, e, v, G, beta, gamma."""
    T, sty, gemm = _begin(problem, tun, style)
    K, V, dt = problem.K, problem.V, problem.dtype
    C, BK = tun.BT, tun.BK  # BV tiles only the recurrence
    n = 2 * C
    sd = SOLVE_DTYPE
    steps = solve_steps(n)
    start, double = _solve_macros(sty, gemm, n, C, steps)
    f32 = "float32"
    # runtime sizes: chunks, heads and sequences do not change the code
    NC, H = T.dynamic("NC"), T.dynamic("H")

    @T.prim_func
    def eda_intra(
        Q: T.Tensor((NC, C, H, K), dt),
        Kk: T.Tensor((NC, C, H, K), dt),
        E: T.Tensor((NC, C, H, K), dt),
        Vv: T.Tensor((NC, C, H, V), dt),
        G: T.Tensor((NC, C, H), f32),
        Beta: T.Tensor((NC, C, H), f32),
        Gamma: T.Tensor((NC, C, H), f32),
        W: T.Tensor((NC, n, H, K), dt),
        U: T.Tensor((NC, n, H, V), dt),
        Aqk: T.Tensor((NC, C, H, n), dt),
    ):
        with T.Kernel(NC, H, threads=sty.threads) as (i_c, i_h):
            b_g = sty.shared((n,), f32)
            b_b = sty.shared((n,), f32)
            b_kap = sty.shared((n, BK), dt)
            b_q = sty.shared((C, BK), dt)
            b_A = sty.frag((n, n))
            b_qk = sty.frag((C, n))
            b_P = sty.shared((n, n), sd)
            b_Pt = sty.shared((n, n), sd)
            b_X = sty.shared((n, n), sd)
            b_acc = sty.frag((n, n))
            b_kb = sty.shared((n, BK), sd)
            b_vb = sty.shared((C, BK), sd)
            b_Xw = sty.shared((n, C), sd)
            b_w = sty.frag((n, BK))
            b_u = sty.frag((n, BK))

            for r in sty.par(n):
                b_g[r] = G[i_c, r % C, i_h]
                b_b[r] = T.if_then_else(r < C, Gamma[i_c, r % C, i_h], Beta[i_c, r % C, i_h])
            for i, j in sty.par(n, n):
                b_A[i, j] = T.float32(0)
            for i, j in sty.par(C, n):
                b_qk[i, j] = T.float32(0)
            # Gram matrices kappa kappa^T and q kappa^T, reduced over K tiles
            for i_k in sty.loop(K // BK):
                T.copy(E[i_c, 0:C, i_h, i_k * BK:(i_k + 1) * BK], b_kap[0:C, 0:BK])
                T.copy(Kk[i_c, 0:C, i_h, i_k * BK:(i_k + 1) * BK], b_kap[C:n, 0:BK])
                T.copy(Q[i_c, 0:C, i_h, i_k * BK:(i_k + 1) * BK], b_q)
                gemm(b_kap, b_kap, b_A, transpose_B=True)
                gemm(b_q, b_kap, b_qk, transpose_B=True)
            # P = -diag(b) L with L masked to earlier rows (pos(s) < pos(r)); X = I + P
            start(b_A, b_g, b_b, b_P, b_Pt, b_X)
            # token i's query sees rows with pos(s) <= 2 i + 1
            for i, s in sty.par(C, n):
                Aqk[i_c, i, i_h, s] = T.cast(T.if_then_else(
                    2 * (s % C) + s // C <= 2 * i + 1,
                    b_qk[i, s] * T.exp(T.min(b_g[i] - b_g[s], T.float32(0))),
                    T.float32(0)), dt)
            # X = prod_i (I + P^(2^i))
            double(b_P, b_Pt, b_X, b_acc)
            # W = X diag(b e^G) kappa, tile by tile over K
            for i_k in T.serial(K // BK):
                for i, d in sty.par(C, BK):
                    b_kb[i, d] = (b_b[i] * T.exp(b_g[i])
                                  * T.cast(E[i_c, i, i_h, i_k * BK + d], f32))
                    b_kb[C + i, d] = (b_b[C + i] * T.exp(b_g[C + i])
                                      * T.cast(Kk[i_c, i, i_h, i_k * BK + d], f32))
                gemm(b_X, b_kb, b_w, clear=True)
                for r, d in sty.par(n, BK):
                    W[i_c, r, i_h, i_k * BK + d] = T.cast(b_w[r, d], dt)
            # U = X diag(b) nu; nu is zero on the erase rows, so only X's write columns count
            for r, j in sty.par(n, C):
                b_Xw[r, j] = b_X[r, C + j]
            for i_v in T.serial(V // BK):
                for i, d in sty.par(C, BK):
                    b_vb[i, d] = b_b[C + i] * T.cast(Vv[i_c, i, i_h, i_v * BK + d], f32)
                gemm(b_Xw, b_vb, b_u, clear=True)
                for r, d in sty.par(n, BK):
                    U[i_c, r, i_h, i_v * BK + d] = T.cast(b_u[r, d], dt)

    return eda_intra


# ---------------------------------------------------------------------------------------------
# Kernel 2: the state recurrence and the output
# ---------------------------------------------------------------------------------------------

def recurrence_kernel(problem: KernelProblem, tun: Tunables, style: str = "gpu") -> Any:
    """o [NC, C, H, V] and final states [N, H, K, V] from W, U, Aqk, q, k, e, G and h0 (G
    transposed and padded, [NC, H, row_len(C)]: one contiguous row a chunk and head, a whole-tile
    copy)."""
    T, sty, gemm = _begin(problem, tun, style)
    K, V, dt = problem.K, problem.V, problem.dtype
    C, BV = tun.BT, tun.BV
    n = 2 * C
    CR = row_len(C)
    f32 = "float32"
    NP1 = T.dynamic("NP1")  # N + 1 chunk offsets
    scale = float(problem.scale)
    has_h0 = problem.initial_state
    piped = sty.num_stages > 1 and not sty.cpu
    out_and_state = _out_state_macro(sty, gemm, n, C, K, BV, scale, dt, in_place=not piped)
    # runtime sizes: chunks, heads and sequences do not change the code
    NC, H, N = T.dynamic("NC"), T.dynamic("H"), T.dynamic("N")

    @T.prim_func
    def eda_recurrence(
        Q: T.Tensor((NC, C, H, K), dt),
        Kk: T.Tensor((NC, C, H, K), dt),
        E: T.Tensor((NC, C, H, K), dt),
        Gt: T.Tensor((NC, H, CR), f32),
        W: T.Tensor((NC, n, H, K), dt),
        U: T.Tensor((NC, n, H, V), dt),
        Aqk: T.Tensor((NC, C, H, n), dt),
        ChunkOffsets: T.Tensor((NP1,), "int32"),
        H0: T.Tensor((N, H, K, V), f32),
        O: T.Tensor((NC, C, H, V), dt),
        HT: T.Tensor((N, H, K, V), f32),
    ):
        with T.Kernel(V // BV, N, H, threads=sty.threads) as (i_v, i_n, i_h):
            b_S = sty.frag((K, BV))
            b_Ss = sty.shared((K, BV), dt)
            b_W = sty.shared((n, K), dt)
            b_ks = sty.shared((n, K), dt)
            b_q = sty.shared((C, K), dt)
            b_Aqk = sty.shared((C, n), dt)
            b_gc = sty.shared((CR,), f32)
            if piped:
                b_e = sty.shared((C, K), dt)
                b_k = sty.shared((C, K), dt)
                b_qs = sty.shared((C, K), dt)
                b_U = sty.shared((n, BV), dt)
            else:
                b_e, b_k, b_qs, b_U = b_ks, b_ks, b_q, U
            b_ws = sty.frag((n, BV))
            b_D = sty.shared((n, BV), dt)
            b_o = sty.frag((C, BV))

            if has_h0:
                T.copy(H0[i_n, i_h, 0:K, i_v * BV:(i_v + 1) * BV], b_S)
            else:
                for i, j in sty.par(K, BV):
                    b_S[i, j] = T.float32(0)
            for i, d in sty.par(K, BV):
                b_Ss[i, d] = T.cast(b_S[i, d], dt)
            c0 = ChunkOffsets[i_n]
            nchunks = ChunkOffsets[i_n + 1] - c0
            for j in sty.loop(nchunks):
                # every load a whole-tile copy into a buffer of its own: the pipeline (num_stages
                # > 1) gives each its own barrier, released after the tile's last read (element
                # loops were grouped with W's copy and released after W's product, before the
                # step's last read of kappa and G)
                T.copy(W[c0 + j, 0:n, i_h, 0:K], b_W)
                if piped:
                    T.copy(E[c0 + j, 0:C, i_h, 0:K], b_e)
                    T.copy(Kk[c0 + j, 0:C, i_h, 0:K], b_k)
                else:  # raw kappa, scaled in place later (an element loop: see NOTES.md)
                    for i, d in sty.par(C, K):
                        b_ks[i, d] = E[c0 + j, i, i_h, d]
                        b_ks[C + i, d] = Kk[c0 + j, i, i_h, d]
                T.copy(Q[c0 + j, 0:C, i_h, 0:K], b_q)
                T.copy(Aqk[c0 + j, 0:C, i_h, 0:n], b_Aqk)
                if piped:
                    T.copy(U[c0 + j, 0:n, i_h, i_v * BV:(i_v + 1) * BV], b_U)
                T.copy(Gt[c0 + j, i_h, 0:CR], b_gc)
                # Delta = U - W S
                gemm(b_W, b_Ss, b_ws, clear=True)
                if piped:
                    for r, d in sty.par(n, BV):
                        b_D[r, d] = T.cast(T.cast(b_U[r, d], f32) - b_ws[r, d], dt)
                else:
                    for r, d in sty.par(n, BV):
                        b_D[r, d] = T.cast(T.cast(U[c0 + j, r, i_h, i_v * BV + d], f32) - b_ws[r, d], dt)
                out_and_state(b_q, b_qs, b_Ss, b_Aqk, b_D, b_o, b_e, b_k, b_ks, b_S, b_gc, O, c0 + j, i_h, i_v)
            T.copy(b_S, HT[i_n, i_h, 0:K, i_v * BV:(i_v + 1) * BV])

    return eda_recurrence


# ---------------------------------------------------------------------------------------------
# Design "tm": the chunk inverse only (no W, U, Aqk in memory), Delta formed in the recurrence
# ---------------------------------------------------------------------------------------------

def tm_smem(K: int, V: int, dtype: str, BT: int, BK: int, num_stages: int) -> int:
    """The inverse kernel: the Gram loop (kappa tiles) and the solve (P, its transpose, X)."""
    n, db, sb = 2 * BT, DTYPE_BYTES[dtype], DTYPE_BYTES[SOLVE_DTYPE]
    gram = max(num_stages, 1) * n * BK * db
    solve = 3 * n * n * sb
    return 2 * n * 4 + max(gram, solve) + 2048


def recurrence_tm_smem(K: int, V: int, dtype: str, BT: int, BV: int, num_stages: int,
                       prefetch: bool = False) -> int:
    """An upper bound of ``recurrence_tm_kernel``'s shared memory; ``prefetch`` keeps two sets of
    the per-chunk tiles, as a two-stage pipeline does."""
    C, n, db = BT, 2 * BT, DTYPE_BYTES[dtype]
    stages = 2 if prefetch else max(num_stages, 1)
    tiles = stages * (3 * C * K + n * n + C * BV) * db     # e, k, q, Tm, v per chunk
    rows = stages * 3 * row_len(C) * 4                     # G, beta, gamma (padded rows)
    work = (C * n + 2 * n * BV + K * BV + 2 * n * K + C * K) * db  # Aqk, X, Delta, S, kappa twice, q
    return tiles + rows + work + stages * n * BV * db + 2048


def tm_kernel(problem: KernelProblem, tun: Tunables, style: str = "gpu") -> Any:
    """Tm = (I + N)^-1 [NC, n, H, n] (rows and columns in the erase-first order) from k, e, G,
    beta, gamma: the solve of ``intra_kernel`` without W, U and Aqk."""
    T, sty, gemm = _begin(problem, tun, style)
    K, dt = problem.K, problem.dtype
    C, BK = tun.BT, tun.BK
    n = 2 * C
    sd = SOLVE_DTYPE
    steps = solve_steps(n)
    start, double = _solve_macros(sty, gemm, n, C, steps)
    f32 = "float32"
    NC, H = T.dynamic("NC"), T.dynamic("H")

    @T.prim_func
    def eda_tm(
        Kk: T.Tensor((NC, C, H, K), dt),
        E: T.Tensor((NC, C, H, K), dt),
        G: T.Tensor((NC, C, H), f32),
        Beta: T.Tensor((NC, C, H), f32),
        Gamma: T.Tensor((NC, C, H), f32),
        Tm: T.Tensor((NC, n, H, n), dt),
    ):
        with T.Kernel(NC, H, threads=sty.threads) as (i_c, i_h):
            b_g = sty.shared((n,), f32)
            b_b = sty.shared((n,), f32)
            b_kap = sty.shared((n, BK), dt)
            b_A = sty.frag((n, n))
            b_P = sty.shared((n, n), sd)
            b_Pt = sty.shared((n, n), sd)
            b_X = sty.shared((n, n), sd)
            b_acc = sty.frag((n, n))

            for r in sty.par(n):
                b_g[r] = G[i_c, r % C, i_h]
                b_b[r] = T.if_then_else(r < C, Gamma[i_c, r % C, i_h], Beta[i_c, r % C, i_h])
            for i, j in sty.par(n, n):
                b_A[i, j] = T.float32(0)
            for i_k in sty.loop(K // BK):
                T.copy(E[i_c, 0:C, i_h, i_k * BK:(i_k + 1) * BK], b_kap[0:C, 0:BK])
                T.copy(Kk[i_c, 0:C, i_h, i_k * BK:(i_k + 1) * BK], b_kap[C:n, 0:BK])
                gemm(b_kap, b_kap, b_A, transpose_B=True)
            start(b_A, b_g, b_b, b_P, b_Pt, b_X)
            double(b_P, b_Pt, b_X, b_acc)
            for r, s in sty.par(n, n):
                Tm[i_c, r, i_h, s] = T.cast(b_X[r, s], dt)

    return eda_tm


def _prefetch_macros(sty: _Style, prefetch: bool, tiles: int) -> tuple[Any, Any]:
    """``wait()``: until this step's ``tiles`` copies have landed (the next step's ``tiles`` may
    still be in flight), then a barrier for the other threads' copies; ``release()``: a barrier
    after a step, before copies into its set are issued. Both nothing on CPU or without
    ``prefetch`` (the copies are then plain ``T.copy``)."""
    T = sty.T
    active = prefetch and not sty.cpu

    @T.macro
    def wait(pending):  # type: ignore[no-untyped-def]
        if active:
            T.ptx_wait_group(pending)
            T.sync_threads()

    @T.macro
    def release():  # type: ignore[no-untyped-def]
        if active:
            T.sync_threads()

    return wait, release


def _tile_copy(sty: _Style, prefetch: bool) -> Any:
    """A whole-tile copy global -> shared: ``T.async_copy`` (cp.async, one group, no wait) when
    the kernel loads ahead on a GPU, else ``T.copy``."""
    T = sty.T
    asynchronous = prefetch and not sty.cpu

    @T.macro
    def tile(src, dst):  # type: ignore[no-untyped-def]
        if asynchronous:
            T.async_copy(src, dst)
        else:
            T.copy(src, dst)

    return tile


def recurrence_tm_kernel(problem: KernelProblem, tun: Tunables, style: str = "gpu") -> Any:
    """o and the final states from q, k, e, v, G, beta, gamma and Tm (design "tm"): per chunk
    X = diag(b) (nu - e^G kappa S), Delta = Tm X, Aqk = (q kappa^T masked and decayed),
    O = scale ((q e^Gq) S + Aqk Delta), S = e^{G_last} S + (kappa e^{G_last - G})^T Delta.
    G, beta and gamma come transposed and padded, [NC, H, row_len(C)] (see ``row_len``).

    ``tun.prefetch`` (num_stages 1): two sets of the per-chunk tiles in shared memory; each step
    first issues the next chunk's loads into the other set (``T.async_copy``: cp.async, no wait)
    and only then waits for its own, so a step's global loads overlap the previous step's chain of
    products instead of preceding it (what the Triton backend's ``h_prefetch`` does with registers;
    H200, run 66: its S1 forward 1.171 -> 0.792 ms). The loop runs over pairs of chunks, one
    step on each set (a set is a Python-level choice: no dynamic shared offsets); the CPU build
    runs the same order with plain copies, so the CPU tests check the indexing of both sets and of
    an odd chunk count."""
    T, sty, gemm = _begin(problem, tun, style)
    K, V, dt = problem.K, problem.V, problem.dtype
    C, BV = tun.BT, tun.BV
    n = 2 * C
    CR = row_len(C)
    f32 = "float32"
    NP1 = T.dynamic("NP1")
    scale = float(problem.scale)
    has_h0 = problem.initial_state
    prefetch = tun.prefetch
    out_and_state = _out_state_macro(sty, gemm, n, C, K, BV, scale, dt)
    NC, H, N = T.dynamic("NC"), T.dynamic("H"), T.dynamic("N")
    #: the per-chunk tiles ``load`` copies (each its own cp.async group with ``prefetch``)
    NT = 8
    wait, release = _prefetch_macros(sty, prefetch, NT)
    tile = _tile_copy(sty, prefetch)

    @T.macro
    def load(E, Kk, Q, Tm, Vv, Gt, Betat, Gammat, c, i_h, i_v,
             b_e, b_k, b_q, b_Tm, b_v, b_gc, b_bet, b_gam):  # type: ignore[no-untyped-def]
        tile(E[c, 0:C, i_h, 0:K], b_e)
        tile(Kk[c, 0:C, i_h, 0:K], b_k)
        tile(Q[c, 0:C, i_h, 0:K], b_q)
        tile(Tm[c, 0:n, i_h, 0:n], b_Tm)
        tile(Vv[c, 0:C, i_h, i_v * BV:(i_v + 1) * BV], b_v)
        tile(Gt[c, i_h, 0:CR], b_gc)
        tile(Betat[c, i_h, 0:CR], b_bet)
        tile(Gammat[c, i_h, 0:CR], b_gam)

    @T.macro
    def step(b_e, b_k, b_q, b_Tm, b_v, b_gc, b_bet, b_gam, b_S, b_Ss, b_ks, b_qs, b_es, b_kks, b_X,
             b_d, b_D, b_kap, b_qk, b_Aqk, b_o, O, c, i_h, i_v):  # type: ignore[no-untyped-def]
        # X = diag(b) (nu - e^G kappa S); nu: v on the write rows, 0 on the erase rows
        gemm(b_e, b_Ss, b_es, clear=True)
        gemm(b_k, b_Ss, b_kks, clear=True)
        for i, d in sty.par(C, BV):
            b_X[i, d] = T.cast(-b_gam[i] * T.exp(b_gc[i]) * b_es[i, d], dt)
            b_X[C + i, d] = T.cast(b_bet[i] * (T.cast(b_v[i, d], f32) - T.exp(b_gc[i]) * b_kks[i, d]), dt)
        # Delta = Tm X
        gemm(b_Tm, b_X, b_d, clear=True)
        for r, d in sty.par(n, BV):
            b_D[r, d] = T.cast(b_d[r, d], dt)
        # Aqk = q kappa^T (kappa = [e; k], assembled in a buffer of its own): token i's
        # query sees the erase and the write row of every token s <= i
        for i, d in sty.par(C, K):
            b_kap[i, d] = b_e[i, d]
            b_kap[C + i, d] = b_k[i, d]
        gemm(b_q, b_kap, b_qk, transpose_B=True, clear=True)
        for i, s in sty.par(C, n):
            b_Aqk[i, s] = T.cast(T.if_then_else(
                s % C <= i, b_qk[i, s] * T.exp(T.min(b_gc[i] - b_gc[s % C], T.float32(0))),
                T.float32(0)), dt)
        out_and_state(b_q, b_qs, b_Ss, b_Aqk, b_D, b_o, b_e, b_k, b_ks, b_S, b_gc, O, c, i_h, i_v)

    @T.prim_func
    def eda_recurrence_tm(
        Q: T.Tensor((NC, C, H, K), dt),
        Kk: T.Tensor((NC, C, H, K), dt),
        E: T.Tensor((NC, C, H, K), dt),
        Vv: T.Tensor((NC, C, H, V), dt),
        Gt: T.Tensor((NC, H, CR), f32),
        Betat: T.Tensor((NC, H, CR), f32),
        Gammat: T.Tensor((NC, H, CR), f32),
        Tm: T.Tensor((NC, n, H, n), dt),
        ChunkOffsets: T.Tensor((NP1,), "int32"),
        H0: T.Tensor((N, H, K, V), f32),
        O: T.Tensor((NC, C, H, V), dt),
        HT: T.Tensor((N, H, K, V), f32),
    ):
        with T.Kernel(V // BV, N, H, threads=sty.threads) as (i_v, i_n, i_h):
            b_S = sty.frag((K, BV))
            b_Ss = sty.shared((K, BV), dt)
            b_e = sty.shared((C, K), dt)
            b_k = sty.shared((C, K), dt)
            b_ks = sty.shared((n, K), dt)
            b_q = sty.shared((C, K), dt)
            b_qs = sty.shared((C, K), dt)
            b_Tm = sty.shared((n, n), dt)
            b_gc = sty.shared((CR,), f32)
            b_bet = sty.shared((CR,), f32)
            b_gam = sty.shared((CR,), f32)
            b_v = sty.shared((C, BV), dt)
            b_es = sty.frag((C, BV))
            b_kks = sty.frag((C, BV))
            b_X = sty.shared((n, BV), dt)
            b_d = sty.frag((n, BV))
            b_D = sty.shared((n, BV), dt)
            b_kap = sty.shared((n, K), dt)
            b_qk = sty.frag((C, n))
            b_Aqk = sty.shared((C, n), dt)
            b_o = sty.frag((C, BV))

            if has_h0:
                T.copy(H0[i_n, i_h, 0:K, i_v * BV:(i_v + 1) * BV], b_S)
            else:
                for i, j in sty.par(K, BV):
                    b_S[i, j] = T.float32(0)
            for i, d in sty.par(K, BV):
                b_Ss[i, d] = T.cast(b_S[i, d], dt)
            c0 = ChunkOffsets[i_n]
            nchunks = ChunkOffsets[i_n + 1] - c0
            if prefetch:
                # the second set of per-chunk tiles
                b_e2 = sty.shared((C, K), dt)
                b_k2 = sty.shared((C, K), dt)
                b_q2 = sty.shared((C, K), dt)
                b_Tm2 = sty.shared((n, n), dt)
                b_v2 = sty.shared((C, BV), dt)
                b_gc2 = sty.shared((CR,), f32)
                b_bet2 = sty.shared((CR,), f32)
                b_gam2 = sty.shared((CR,), f32)
                last = c0 + nchunks - 1
                if nchunks > 0:
                    load(E, Kk, Q, Tm, Vv, Gt, Betat, Gammat, c0, i_h, i_v,
                         b_e, b_k, b_q, b_Tm, b_v, b_gc, b_bet, b_gam)
                for jj in T.serial((nchunks + 1) // 2):
                    # chunk c0 + 2 jj on the first set (loaded), the next one's loads into the second
                    load(E, Kk, Q, Tm, Vv, Gt, Betat, Gammat, T.min(c0 + 2 * jj + 1, last), i_h, i_v,
                         b_e2, b_k2, b_q2, b_Tm2, b_v2, b_gc2, b_bet2, b_gam2)
                    wait(NT)
                    step(b_e, b_k, b_q, b_Tm, b_v, b_gc, b_bet, b_gam, b_S, b_Ss, b_ks, b_qs, b_es, b_kks,
                         b_X, b_d, b_D, b_kap, b_qk, b_Aqk, b_o, O, c0 + 2 * jj, i_h, i_v)
                    release()
                    if 2 * jj + 1 < nchunks:
                        load(E, Kk, Q, Tm, Vv, Gt, Betat, Gammat, T.min(c0 + 2 * jj + 2, last), i_h, i_v,
                             b_e, b_k, b_q, b_Tm, b_v, b_gc, b_bet, b_gam)
                        wait(NT)
                        step(b_e2, b_k2, b_q2, b_Tm2, b_v2, b_gc2, b_bet2, b_gam2, b_S, b_Ss, b_ks, b_qs,
                             b_es, b_kks, b_X, b_d, b_D, b_kap, b_qk, b_Aqk, b_o, O, c0 + 2 * jj + 1, i_h, i_v)
                        release()
                wait(0)
            else:
                for j in sty.loop(nchunks):
                    # whole-tile copies into buffers of their own, only read afterwards (see
                    # ``recurrence_kernel``: what TileLang's pipeline needs to release them correctly)
                    load(E, Kk, Q, Tm, Vv, Gt, Betat, Gammat, c0 + j, i_h, i_v,
                         b_e, b_k, b_q, b_Tm, b_v, b_gc, b_bet, b_gam)
                    step(b_e, b_k, b_q, b_Tm, b_v, b_gc, b_bet, b_gam, b_S, b_Ss, b_ks, b_qs, b_es, b_kks,
                         b_X, b_d, b_D, b_kap, b_qk, b_Aqk, b_o, O, c0 + j, i_h, i_v)
            T.copy(b_S, HT[i_n, i_h, 0:K, i_v * BV:(i_v + 1) * BV])

    return eda_recurrence_tm


# ---------------------------------------------------------------------------------------------
# Backward: two sequential scans, the per-chunk gradients and the intra-chunk backward (backend.py)
# ---------------------------------------------------------------------------------------------

def states_smem(K: int, V: int, dtype: str, BT: int, BV: int, num_stages: int, prefetch: bool = False) -> int:
    n, db = 2 * BT, DTYPE_BYTES[dtype]
    sets = 2 if prefetch else 1                              # W, Kd (and U's tile, loaded ahead)
    return (sets * (2 * n * K + (n * BV if prefetch else 0)) + K * BV + n * BV) * db + 2048  # S, Delta


def dstates_smem(K: int, V: int, dtype: str, BT: int, BV: int, num_stages: int, prefetch: bool = False) -> int:
    C, n, db = BT, 2 * BT, DTYPE_BYTES[dtype]
    sets = 2 if prefetch else 1                              # W, Kd, Qg, Aqk, dO
    return (sets * (2 * n * K + C * K + C * n + C * BV) + K * BV + n * BV) * db + 2048  # dS, dDelta


def states_kernel(problem: KernelProblem, tun: Tunables, style: str = "gpu") -> Any:
    """The state entering every chunk, Hs [NC, H, K, V] in the storage dtype (as the products use
    it), from W, U, Kd [NC, n, H, .] and the chunk decay Dec [NC, H]: S_0 = H0,
    S_{j+1} = Dec_j S_j + Kd_j^T (U_j - W_j S_j). Rows in any order shared by W, U and Kd (the
    backward passes the intra kernel's erase-first order).

    ``tun.prefetch``: W, Kd and U's tile of the next chunk are loaded into a second set while
    this chunk's step runs (as in ``recurrence_tm_kernel``)."""
    T, sty, gemm = _begin(problem, tun, style)
    K, V, dt = problem.K, problem.V, problem.dtype
    C, BV = tun.BT, tun.BV
    n = 2 * C
    f32 = "float32"
    NP1 = T.dynamic("NP1")
    NC, H, N = T.dynamic("NC"), T.dynamic("H"), T.dynamic("N")
    prefetch = tun.prefetch
    wait, release = _prefetch_macros(sty, prefetch, 3)
    tile = _tile_copy(sty, prefetch)

    @T.macro
    def load(W, Kd, U, c, i_h, i_v, b_W, b_Kd, b_U):  # type: ignore[no-untyped-def]
        tile(W[c, 0:n, i_h, 0:K], b_W)
        tile(Kd[c, 0:n, i_h, 0:K], b_Kd)
        if prefetch:
            tile(U[c, 0:n, i_h, i_v * BV:(i_v + 1) * BV], b_U)

    @T.macro
    def step(U, Dec, Hs, c, i_h, i_v, b_W, b_Kd, b_U, b_S, b_Ss, b_ws, b_D):  # type: ignore[no-untyped-def]
        for i, d in sty.par(K, BV):
            b_Ss[i, d] = T.cast(b_S[i, d], dt)
        T.copy(b_Ss, Hs[c, i_h, 0:K, i_v * BV:(i_v + 1) * BV])
        # Delta = U - W S; S = Dec S + Kd^T Delta
        gemm(b_W, b_Ss, b_ws, clear=True)
        if prefetch:
            for r, d in sty.par(n, BV):
                b_D[r, d] = T.cast(T.cast(b_U[r, d], f32) - b_ws[r, d], dt)
        else:
            for r, d in sty.par(n, BV):
                b_D[r, d] = T.cast(T.cast(U[c, r, i_h, i_v * BV + d], f32) - b_ws[r, d], dt)
        for i, d in sty.par(K, BV):
            b_S[i, d] = b_S[i, d] * Dec[c, i_h]
        gemm(b_Kd, b_D, b_S, transpose_A=True)

    @T.prim_func
    def eda_states(
        W: T.Tensor((NC, n, H, K), dt),
        U: T.Tensor((NC, n, H, V), dt),
        Kd: T.Tensor((NC, n, H, K), dt),
        Dec: T.Tensor((NC, H), f32),
        ChunkOffsets: T.Tensor((NP1,), "int32"),
        H0: T.Tensor((N, H, K, V), f32),
        Hs: T.Tensor((NC, H, K, V), dt),
    ):
        with T.Kernel(V // BV, N, H, threads=sty.threads) as (i_v, i_n, i_h):
            b_S = sty.frag((K, BV))
            b_Ss = sty.shared((K, BV), dt)
            b_W = sty.shared((n, K), dt)
            b_Kd = sty.shared((n, K), dt)
            b_ws = sty.frag((n, BV))
            b_D = sty.shared((n, BV), dt)

            T.copy(H0[i_n, i_h, 0:K, i_v * BV:(i_v + 1) * BV], b_S)
            c0 = ChunkOffsets[i_n]
            nchunks = ChunkOffsets[i_n + 1] - c0
            if prefetch:
                b_U = sty.shared((n, BV), dt)
                b_W2 = sty.shared((n, K), dt)
                b_Kd2 = sty.shared((n, K), dt)
                b_U2 = sty.shared((n, BV), dt)
                last = c0 + nchunks - 1
                if nchunks > 0:
                    load(W, Kd, U, c0, i_h, i_v, b_W, b_Kd, b_U)
                for jj in T.serial((nchunks + 1) // 2):
                    load(W, Kd, U, T.min(c0 + 2 * jj + 1, last), i_h, i_v, b_W2, b_Kd2, b_U2)
                    wait(3)
                    step(U, Dec, Hs, c0 + 2 * jj, i_h, i_v, b_W, b_Kd, b_U, b_S, b_Ss, b_ws, b_D)
                    release()
                    if 2 * jj + 1 < nchunks:
                        load(W, Kd, U, T.min(c0 + 2 * jj + 2, last), i_h, i_v, b_W, b_Kd, b_U)
                        wait(3)
                        step(U, Dec, Hs, c0 + 2 * jj + 1, i_h, i_v, b_W2, b_Kd2, b_U2, b_S, b_Ss, b_ws, b_D)
                        release()
                wait(0)
            else:
                for j in sty.loop(nchunks):
                    load(W, Kd, U, c0 + j, i_h, i_v, b_W, b_Kd, b_W)
                    step(U, Dec, Hs, c0 + j, i_h, i_v, b_W, b_Kd, b_W, b_S, b_Ss, b_ws, b_D)

    return eda_states


def dstates_kernel(problem: KernelProblem, tun: Tunables, style: str = "gpu") -> Any:
    """The gradient of the state leaving every chunk, DHs [NC, H, K, V] in the storage dtype, and
    of the initial state, DH0 [N, H, K, V] float32, run backwards from DHT (the final state's gradient):
    dDelta = Aqk^T dO + Kd dS, dS <- Dec dS + Qg^T dO - W^T dDelta (the transpose of one chunk
    step o = Qg S + Aqk Delta, Delta = U - W S, S' = Dec S + Kd^T Delta).

    ``tun.prefetch``: the previous chunk's W, Kd, Qg, Aqk and dO tiles are loaded into a second
    set while this chunk's step runs (as in ``recurrence_tm_kernel``, walking backwards)."""
    T, sty, gemm = _begin(problem, tun, style)
    K, V, dt = problem.K, problem.V, problem.dtype
    C, BV = tun.BT, tun.BV
    n = 2 * C
    NP1 = T.dynamic("NP1")
    NC, H, N = T.dynamic("NC"), T.dynamic("H"), T.dynamic("N")
    prefetch = tun.prefetch
    wait, release = _prefetch_macros(sty, prefetch, 5)
    tile = _tile_copy(sty, prefetch)

    @T.macro
    def load(W, Kd, Qg, Aqk, DO, j, i_h, i_v, b_W, b_Kd, b_Qg, b_Aqk, b_dO):  # type: ignore[no-untyped-def]
        tile(W[j, 0:n, i_h, 0:K], b_W)
        tile(Kd[j, 0:n, i_h, 0:K], b_Kd)
        tile(Qg[j, 0:C, i_h, 0:K], b_Qg)
        tile(Aqk[j, 0:C, i_h, 0:n], b_Aqk)
        tile(DO[j, 0:C, i_h, i_v * BV:(i_v + 1) * BV], b_dO)

    @T.macro
    def step(Dec, DHs, j, i_h, i_v, b_W, b_Kd, b_Qg, b_Aqk, b_dO, b_dS, b_dSs, b_dd, b_dD,
             b_qd, b_wd):  # type: ignore[no-untyped-def]
        for i, d in sty.par(K, BV):
            b_dSs[i, d] = T.cast(b_dS[i, d], dt)
        T.copy(b_dSs, DHs[j, i_h, 0:K, i_v * BV:(i_v + 1) * BV])
        # dDelta = Aqk^T dO + Kd dS
        gemm(b_Aqk, b_dO, b_dd, transpose_A=True, clear=True)
        gemm(b_Kd, b_dSs, b_dd)
        for r, d in sty.par(n, BV):
            b_dD[r, d] = T.cast(b_dd[r, d], dt)
        # dS <- Dec dS + Qg^T dO - W^T dDelta
        gemm(b_Qg, b_dO, b_qd, transpose_A=True, clear=True)
        gemm(b_W, b_dD, b_wd, transpose_A=True, clear=True)
        for i, d in sty.par(K, BV):
            b_dS[i, d] = b_dS[i, d] * Dec[j, i_h] + b_qd[i, d] - b_wd[i, d]

    @T.prim_func
    def eda_dstates(
        W: T.Tensor((NC, n, H, K), dt),
        Kd: T.Tensor((NC, n, H, K), dt),
        Qg: T.Tensor((NC, C, H, K), dt),
        Aqk: T.Tensor((NC, C, H, n), dt),
        Dec: T.Tensor((NC, H), "float32"),
        DO: T.Tensor((NC, C, H, V), dt),
        ChunkOffsets: T.Tensor((NP1,), "int32"),
        DHT: T.Tensor((N, H, K, V), "float32"),
        DHs: T.Tensor((NC, H, K, V), dt),
        DH0: T.Tensor((N, H, K, V), "float32"),
    ):
        with T.Kernel(V // BV, N, H, threads=sty.threads) as (i_v, i_n, i_h):
            b_dS = sty.frag((K, BV))
            b_dSs = sty.shared((K, BV), dt)
            b_W = sty.shared((n, K), dt)
            b_Kd = sty.shared((n, K), dt)
            b_Qg = sty.shared((C, K), dt)
            b_Aqk = sty.shared((C, n), dt)
            b_dO = sty.shared((C, BV), dt)
            b_dd = sty.frag((n, BV))
            b_dD = sty.shared((n, BV), dt)
            b_qd = sty.frag((K, BV))
            b_wd = sty.frag((K, BV))

            T.copy(DHT[i_n, i_h, 0:K, i_v * BV:(i_v + 1) * BV], b_dS)
            c0 = ChunkOffsets[i_n]
            nchunks = ChunkOffsets[i_n + 1] - c0
            top = c0 + nchunks - 1   # the scan's first chunk (it walks backwards)
            if prefetch:
                b_W2 = sty.shared((n, K), dt)
                b_Kd2 = sty.shared((n, K), dt)
                b_Qg2 = sty.shared((C, K), dt)
                b_Aqk2 = sty.shared((C, n), dt)
                b_dO2 = sty.shared((C, BV), dt)
                if nchunks > 0:
                    load(W, Kd, Qg, Aqk, DO, top, i_h, i_v, b_W, b_Kd, b_Qg, b_Aqk, b_dO)
                for tt in T.serial((nchunks + 1) // 2):
                    load(W, Kd, Qg, Aqk, DO, T.max(top - 2 * tt - 1, c0), i_h, i_v,
                         b_W2, b_Kd2, b_Qg2, b_Aqk2, b_dO2)
                    wait(5)
                    step(Dec, DHs, top - 2 * tt, i_h, i_v, b_W, b_Kd, b_Qg, b_Aqk, b_dO, b_dS, b_dSs, b_dd,
                         b_dD, b_qd, b_wd)
                    release()
                    if 2 * tt + 1 < nchunks:
                        load(W, Kd, Qg, Aqk, DO, T.max(top - 2 * tt - 2, c0), i_h, i_v,
                             b_W, b_Kd, b_Qg, b_Aqk, b_dO)
                        wait(5)
                        step(Dec, DHs, top - 2 * tt - 1, i_h, i_v, b_W2, b_Kd2, b_Qg2, b_Aqk2, b_dO2, b_dS,
                             b_dSs, b_dd, b_dD, b_qd, b_wd)
                        release()
                wait(0)
            else:
                for jj in sty.loop(nchunks):
                    load(W, Kd, Qg, Aqk, DO, top - jj, i_h, i_v, b_W, b_Kd, b_Qg, b_Aqk, b_dO)
                    step(Dec, DHs, top - jj, i_h, i_v, b_W, b_Kd, b_Qg, b_Aqk, b_dO, b_dS, b_dSs, b_dd,
                         b_dD, b_qd, b_wd)
            T.copy(b_dS, DH0[i_n, i_h, 0:K, i_v * BV:(i_v + 1) * BV])

    return eda_dstates


def intra_bwd_smem(K: int, V: int, dtype: str, BT: int, BK: int, num_stages: int) -> int:
    """``intra_bwd_kernel`` (float32 buffers; TileLang reuses shared memory between phases): an
    upper bound of what lowering for sm_90a allocated at BT 16 and 32, BK 32 and 64 (37.6 to
    148.9 KB; the bound is 28% to 47% above), independent of K and V (both are tiled by BK)."""
    C, n = BT, 2 * BT
    return 4 * (6 * n * n + 2 * C * n + 6 * n * BK) + 2048


def intra_bwd_kernel(problem: KernelProblem, tun: Tunables, style: str = "gpu") -> Any:
    """The intra-chunk backward, grid chunks x heads: from the gradients of W, U, Qg, Aqk, Kd and
    the chunk decay (rows in the erase-first order of ``intra_kernel``, float32) to those of the
    packed inputs: dQ (of the scaled q), dK, dE, dV (written in the storage dtype, the dtype the
    packing's autograd takes them in), dG (of the chunk-local cumulative log decay), dBeta, dGamma
    (float32). Recomputes the Gram matrices and X = (I + N)^-1, then

    - dX = dW (diag(b e^G) kappa)^T + [0 | dU (diag(beta) v)^T]; dN = -X^T dX X^T (masked);
    - dkappa = (dKK + dKK^T) kappa + diag(b e^G) X^T dW + dQK^T q + dKd e^(G_last - G);
    - dq = dQK kappa + dQg e^G; dv = diag(beta) X[:, C:]^T dU;
    - row sums of those products give db and the decay's gradient per row, folded to tokens.
    """
    T, sty, gemm = _begin(problem, tun, style)
    K, V, dt = problem.K, problem.V, problem.dtype
    C, BK = tun.BT, tun.BK
    n = 2 * C
    sd = SOLVE_DTYPE
    steps = solve_steps(n)
    start, double = _solve_macros(sty, gemm, n, C, steps)
    f32 = "float32"
    NC, H = T.dynamic("NC"), T.dynamic("H")

    @T.prim_func
    def eda_intra_bwd(
        Q: T.Tensor((NC, C, H, K), dt),
        Kk: T.Tensor((NC, C, H, K), dt),
        E: T.Tensor((NC, C, H, K), dt),
        Vv: T.Tensor((NC, C, H, V), dt),
        G: T.Tensor((NC, C, H), f32),
        Beta: T.Tensor((NC, C, H), f32),
        Gamma: T.Tensor((NC, C, H), f32),
        dW: T.Tensor((NC, n, H, K), f32),
        dU: T.Tensor((NC, n, H, V), f32),
        dQg: T.Tensor((NC, C, H, K), f32),
        dAqk: T.Tensor((NC, C, H, n), f32),
        dKd: T.Tensor((NC, n, H, K), f32),
        dDec: T.Tensor((NC, H), f32),
        dQ: T.Tensor((NC, C, H, K), dt),
        dK: T.Tensor((NC, C, H, K), dt),
        dE: T.Tensor((NC, C, H, K), dt),
        dV: T.Tensor((NC, C, H, V), dt),
        dG: T.Tensor((NC, C, H), f32),
        dBeta: T.Tensor((NC, C, H), f32),
        dGamma: T.Tensor((NC, C, H), f32),
    ):
        with T.Kernel(NC, H, threads=sty.threads) as (i_c, i_h):
            b_g = sty.shared((n,), f32)
            b_b = sty.shared((n,), f32)
            b_db = sty.shared((n,), f32)
            b_dg = sty.shared((n,), f32)
            b_dgq = sty.shared((C,), f32)
            b_dgl = sty.shared((n,), f32)      # per-row parts of the gradient of G_last
            b_kap = sty.shared((n, BK), sd)
            b_q = sty.shared((C, BK), sd)
            b_A = sty.frag((n, n))
            b_qk = sty.frag((C, n))
            b_kk = sty.shared((n, n), f32)
            b_qks = sty.shared((C, n), f32)
            b_P = sty.shared((n, n), sd)
            b_Pt = sty.shared((n, n), sd)
            b_X = sty.shared((n, n), sd)
            b_acc = sty.frag((n, n))
            b_dX = sty.frag((n, n))
            b_dXw = sty.frag((n, C))
            b_dXs = sty.shared((n, n), sd)
            b_Xw = sty.shared((n, C), sd)
            b_m1 = sty.shared((n, n), sd)
            b_dks = sty.shared((n, n), sd)
            b_dkk = sty.shared((n, n), f32)
            b_dnn = sty.shared((n, n + 1), f32)
            b_dne = sty.shared((n, n + 1), f32)
            b_dqk = sty.shared((C, n), sd)
            b_daa = sty.shared((C, n + 1), f32)
            b_kb = sty.shared((n, BK), sd)
            b_dw = sty.shared((n, BK), sd)
            b_du = sty.shared((n, BK), sd)
            b_vb = sty.shared((C, BK), sd)
            b_dvb = sty.frag((C, BK))
            b_dvbs = sty.shared((C, BK + 1), f32)
            b_dk = sty.frag((n, BK))
            b_dkb = sty.frag((n, BK))
            b_dq = sty.frag((C, BK))
            b_t1 = sty.shared((n, BK + 1), f32)
            b_t2 = sty.shared((n, BK + 1), f32)
            b_t3 = sty.shared((C, BK + 1), f32)
            b_t4 = sty.shared((n, BK), f32)
            b_one = T.alloc_local((1,), f32)
            b_r = T.alloc_local((3,), f32)   # a row's running sums, per thread

            for r in sty.par(n):
                b_g[r] = G[i_c, r % C, i_h]
                b_b[r] = T.if_then_else(r < C, Gamma[i_c, r % C, i_h], Beta[i_c, r % C, i_h])
                b_db[r] = T.float32(0)
                b_dg[r] = T.float32(0)
                b_dgl[r] = T.float32(0)
            for i in sty.par(C):
                b_dgq[i] = T.float32(0)
            for i, j in sty.par(n, n):
                b_A[i, j] = T.float32(0)
            for i, j in sty.par(C, n):
                b_qk[i, j] = T.float32(0)
            # the Gram matrices kappa kappa^T and q kappa^T, then the solve, as in the forward
            for i_k in T.serial(K // BK):
                for i, d in sty.par(C, BK):
                    b_kap[i, d] = T.cast(E[i_c, i, i_h, i_k * BK + d], sd)
                    b_kap[C + i, d] = T.cast(Kk[i_c, i, i_h, i_k * BK + d], sd)
                    b_q[i, d] = T.cast(Q[i_c, i, i_h, i_k * BK + d], sd)
                gemm(b_kap, b_kap, b_A, transpose_B=True)
                gemm(b_q, b_kap, b_qk, transpose_B=True)
            for r, s in sty.par(n, n):
                b_kk[r, s] = b_A[r, s]
            for i, s in sty.par(C, n):
                b_qks[i, s] = b_qk[i, s]
            start(b_A, b_g, b_b, b_P, b_Pt, b_X)
            double(b_P, b_Pt, b_X, b_acc)
            for r, j in sty.par(n, C):
                b_Xw[r, j] = b_X[r, C + j]
            # dX = dW (diag(b e^G) kappa)^T + [0 | dU (diag(beta) v)^T]; dv on the way
            for i, j in sty.par(n, n):
                b_dX[i, j] = T.float32(0)
            for i_k in T.serial(K // BK):
                for r, d in sty.par(n, BK):
                    b_kb[r, d] = T.cast(b_b[r] * T.exp(b_g[r]) * T.if_then_else(
                        r < C, T.cast(E[i_c, r % C, i_h, i_k * BK + d], f32),
                        T.cast(Kk[i_c, r % C, i_h, i_k * BK + d], f32)), sd)
                    b_dw[r, d] = T.cast(dW[i_c, r, i_h, i_k * BK + d], sd)
                gemm(b_dw, b_kb, b_dX, transpose_B=True)
            for i, j in sty.par(n, C):
                b_dXw[i, j] = T.float32(0)
            for i_v in T.serial(V // BK):
                for i, d in sty.par(C, BK):
                    b_vb[i, d] = T.cast(b_b[C + i] * T.cast(Vv[i_c, i, i_h, i_v * BK + d], f32), sd)
                for r, d in sty.par(n, BK):
                    b_du[r, d] = T.cast(dU[i_c, r, i_h, i_v * BK + d], sd)
                gemm(b_du, b_vb, b_dXw, transpose_B=True)
                gemm(b_Xw, b_du, b_dvb, transpose_A=True, clear=True)
                for i, d in sty.par(C, BK):
                    dV[i_c, i, i_h, i_v * BK + d] = T.cast(b_b[C + i] * b_dvb[i, d], dt)
                    b_dvbs[i, d] = b_dvb[i, d] * T.cast(Vv[i_c, i, i_h, i_v * BK + d], f32)
                for i in sty.par(C):
                    b_r[0] = b_db[C + i]
                    for d in T.serial(BK):
                        b_r[0] = b_r[0] + b_dvbs[i, d]
                    b_db[C + i] = b_r[0]
            for r, s in sty.par(n, n):
                b_dXs[r, s] = T.cast(b_dX[r, s], sd)
            for r, j in sty.par(n, C):
                b_dXs[r, C + j] = T.cast(T.cast(b_dXs[r, C + j], f32) + b_dXw[r, j], sd)
            # dN = -X^T dX X^T on the strictly-earlier pattern; N = diag(b) (kappa kappa^T) decayed
            gemm(b_X, b_dXs, b_acc, transpose_A=True, clear=True)
            for r, s in sty.par(n, n):
                b_m1[r, s] = T.cast(b_acc[r, s], sd)
            gemm(b_m1, b_X, b_acc, transpose_B=True, clear=True)
            for r, s in sty.par(n, n):
                b_dne[r, s] = T.if_then_else(
                    2 * (s % C) + s // C < 2 * (r % C) + r // C,
                    -b_acc[r, s] * T.exp(T.min(b_g[r] - b_g[s], T.float32(0))), T.float32(0))
            for r, s in sty.par(n, n):
                b_dkk[r, s] = b_dne[r, s] * b_b[r]
                b_dnn[r, s] = b_dne[r, s] * b_b[r] * b_kk[r, s]
                b_dne[r, s] = b_dne[r, s] * b_kk[r, s]
            for r in sty.par(n):
                b_r[0] = b_db[r]
                b_r[1] = b_dg[r]
                for s in T.serial(n):
                    b_r[0] = b_r[0] + b_dne[r, s]
                    b_r[1] = b_r[1] + b_dnn[r, s] - b_dnn[s, r]
                b_db[r] = b_r[0]
                b_dg[r] = b_r[1]
            # Aqk = (q kappa^T) masked and decayed
            for i, s in sty.par(C, n):
                b_dqk[i, s] = T.cast(T.if_then_else(
                    2 * (s % C) + s // C <= 2 * i + 1,
                    dAqk[i_c, i, i_h, s] * T.exp(T.min(b_g[i] - b_g[s], T.float32(0))), T.float32(0)), sd)
            for i, s in sty.par(C, n):
                b_daa[i, s] = T.cast(b_dqk[i, s], f32) * b_qks[i, s]
            for i in sty.par(C):
                b_r[0] = b_dgq[i]
                for s in T.serial(n):
                    b_r[0] = b_r[0] + b_daa[i, s]
                b_dgq[i] = b_r[0]
            for s in sty.par(n):
                b_r[0] = b_dg[s]
                for i in T.serial(C):
                    b_r[0] = b_r[0] - b_daa[i, s]
                b_dg[s] = b_r[0]
            for r, s in sty.par(n, n):
                b_dks[r, s] = T.cast(b_dkk[r, s] + b_dkk[s, r], sd)
            # dkappa, dq per K tile
            for i_k in T.serial(K // BK):
                for i, d in sty.par(C, BK):
                    b_kap[i, d] = T.cast(E[i_c, i, i_h, i_k * BK + d], sd)
                    b_kap[C + i, d] = T.cast(Kk[i_c, i, i_h, i_k * BK + d], sd)
                    b_q[i, d] = T.cast(Q[i_c, i, i_h, i_k * BK + d], sd)
                for r, d in sty.par(n, BK):
                    b_dw[r, d] = T.cast(dW[i_c, r, i_h, i_k * BK + d], sd)
                gemm(b_dks, b_kap, b_dk, clear=True)
                gemm(b_dqk, b_q, b_dk, transpose_A=True)
                gemm(b_X, b_dw, b_dkb, transpose_A=True, clear=True)
                gemm(b_dqk, b_kap, b_dq, clear=True)
                for r, d in sty.par(n, BK):
                    b_t1[r, d] = b_dkb[r, d]
                for r, d in sty.par(n, BK):
                    b_t2[r, d] = dKd[i_c, r, i_h, i_k * BK + d] * T.exp(b_g[n - 1] - b_g[r])
                for r, d in sty.par(n, BK):
                    b_t4[r, d] = b_dk[r, d] + b_b[r] * T.exp(b_g[r]) * b_t1[r, d] + b_t2[r, d]
                for i, d in sty.par(C, BK):
                    dE[i_c, i, i_h, i_k * BK + d] = T.cast(b_t4[i, d], dt)
                    dK[i_c, i, i_h, i_k * BK + d] = T.cast(b_t4[C + i, d], dt)
                for i, d in sty.par(C, BK):
                    dQ[i_c, i, i_h, i_k * BK + d] = T.cast(
                        b_dq[i, d] + dQg[i_c, i, i_h, i_k * BK + d] * T.exp(b_g[i]), dt)
                    b_t3[i, d] = (dQg[i_c, i, i_h, i_k * BK + d] * T.exp(b_g[i])
                                  * T.cast(b_q[i, d], f32))
                for r, d in sty.par(n, BK):
                    b_t1[r, d] = b_t1[r, d] * T.cast(b_kap[r, d], f32)
                    b_t2[r, d] = b_t2[r, d] * T.cast(b_kap[r, d], f32)
                for r in sty.par(n):
                    b_r[0] = T.float32(0)
                    b_r[1] = T.float32(0)
                    for d in T.serial(BK):
                        b_r[0] = b_r[0] + b_t1[r, d]
                        b_r[1] = b_r[1] + b_t2[r, d]
                    b_db[r] = b_db[r] + T.exp(b_g[r]) * b_r[0]
                    b_dg[r] = b_dg[r] + b_b[r] * T.exp(b_g[r]) * b_r[0] - b_r[1]
                    b_dgl[r] = b_dgl[r] + b_r[1]
                for i in sty.par(C):
                    b_r[0] = b_dgq[i]
                    for d in T.serial(BK):
                        b_r[0] = b_r[0] + b_t3[i, d]
                    b_dgq[i] = b_r[0]
            # fold rows to tokens: rows i and C + i are token i; G_last is token C - 1's
            # (per thread in a register: a shared read-write inside the branch would need a barrier)
            for i in sty.par(C):
                b_one[0] = b_dgq[i] + b_dg[i] + b_dg[C + i]
                if i == C - 1:
                    for r in T.serial(n):
                        b_one[0] = b_one[0] + b_dgl[r]
                    b_one[0] = b_one[0] + dDec[i_c, i_h] * T.exp(b_g[n - 1])
                dG[i_c, i, i_h] = b_one[0]
            for i in sty.par(C):
                dGamma[i_c, i, i_h] = b_db[i]
                dBeta[i_c, i, i_h] = b_db[C + i]

    return eda_intra_bwd


def chunk_grads_smem(K: int, V: int, dtype: str, BT: int, BV: int, num_stages: int) -> int:
    """``chunk_grads_kernel``, buffers in the storage dtype as allocated (W, Kd, Aqk; S, dS, dO,
    Delta, dDelta, -dDelta tiles) and the float32 S * dS rows."""
    C, n, db = BT, 2 * BT, DTYPE_BYTES[dtype]
    return db * (2 * n * K + C * n + 2 * K * BV + C * BV + 3 * n * BV) + 4 * K + 2048


def chunk_grads_kernel(problem: KernelProblem, tun: Tunables, style: str = "gpu") -> Any:
    """The per-chunk gradients between the backward's two scans, grid chunks x heads, V tiles in a
    loop (no atomics): with S (Hs, the state entering the chunk) and dS (DHs, the gradient of the
    state leaving it), Delta = U - W S, dDelta = Aqk^T dO + Kd dS;
    dU = dDelta, dW = -dDelta S^T, dQg = dO S^T, dAqk = dO Delta^T, dKd = Delta dS^T,
    dDec = <S, dS>. Operands in the storage dtype (as the two scans' products are; S and dS come
    stored in it), float32 accumulation; outputs float32, rows in the order of W, U, Kd (the
    erase-first order)."""
    T, sty, gemm = _begin(problem, tun, style)
    K, V, dt = problem.K, problem.V, problem.dtype
    C, BV = tun.BT, tun.BV
    n = 2 * C
    f32 = "float32"
    NC, H = T.dynamic("NC"), T.dynamic("H")

    @T.prim_func
    def eda_chunk_grads(
        Hs: T.Tensor((NC, H, K, V), dt),
        DHs: T.Tensor((NC, H, K, V), dt),
        W: T.Tensor((NC, n, H, K), dt),
        U: T.Tensor((NC, n, H, V), dt),
        Kd: T.Tensor((NC, n, H, K), dt),
        Aqk: T.Tensor((NC, C, H, n), dt),
        DO: T.Tensor((NC, C, H, V), dt),
        dW: T.Tensor((NC, n, H, K), f32),
        dU: T.Tensor((NC, n, H, V), f32),
        dQg: T.Tensor((NC, C, H, K), f32),
        dAqk: T.Tensor((NC, C, H, n), f32),
        dKd: T.Tensor((NC, n, H, K), f32),
        dDec: T.Tensor((NC, H), f32),
    ):
        with T.Kernel(NC, H, threads=sty.threads) as (i_c, i_h):
            b_W = sty.shared((n, K), dt)
            b_Kd = sty.shared((n, K), dt)
            b_Aqk = sty.shared((C, n), dt)
            b_S = sty.shared((K, BV), dt)
            b_dS = sty.shared((K, BV), dt)
            b_dO = sty.shared((C, BV), dt)
            b_ws = sty.frag((n, BV))
            b_dd = sty.frag((n, BV))
            b_D = sty.shared((n, BV), dt)
            b_dD = sty.shared((n, BV), dt)
            b_mD = sty.shared((n, BV), dt)
            b_dw = sty.frag((n, K))
            b_dkd = sty.frag((n, K))
            b_dqg = sty.frag((C, K))
            b_da = sty.frag((C, n))
            b_red = sty.shared((K,), f32)
            b_one = T.alloc_local((1,), f32)

            T.copy(W[i_c, 0:n, i_h, 0:K], b_W)
            T.copy(Kd[i_c, 0:n, i_h, 0:K], b_Kd)
            T.copy(Aqk[i_c, 0:C, i_h, 0:n], b_Aqk)
            for r, d in sty.par(n, K):
                b_dw[r, d] = T.float32(0)
                b_dkd[r, d] = T.float32(0)
            for i, s in sty.par(C, n):
                b_da[i, s] = T.float32(0)
            for i, d in sty.par(C, K):
                b_dqg[i, d] = T.float32(0)
            for i in sty.par(K):
                b_red[i] = T.float32(0)
            for i_v in T.serial(V // BV):
                T.copy(Hs[i_c, i_h, 0:K, i_v * BV:(i_v + 1) * BV], b_S)
                T.copy(DHs[i_c, i_h, 0:K, i_v * BV:(i_v + 1) * BV], b_dS)
                T.copy(DO[i_c, 0:C, i_h, i_v * BV:(i_v + 1) * BV], b_dO)
                # Delta = U - W S; dDelta = Aqk^T dO + Kd dS
                gemm(b_W, b_S, b_ws, clear=True)
                gemm(b_Aqk, b_dO, b_dd, transpose_A=True, clear=True)
                gemm(b_Kd, b_dS, b_dd)
                for r, d in sty.par(n, BV):
                    b_D[r, d] = T.cast(T.cast(U[i_c, r, i_h, i_v * BV + d], f32) - b_ws[r, d], dt)
                for r, d in sty.par(n, BV):
                    dU[i_c, r, i_h, i_v * BV + d] = b_dd[r, d]
                    b_dD[r, d] = T.cast(b_dd[r, d], dt)
                    b_mD[r, d] = T.cast(-b_dd[r, d], dt)
                gemm(b_mD, b_S, b_dw, transpose_B=True)
                gemm(b_dO, b_S, b_dqg, transpose_B=True)
                gemm(b_dO, b_D, b_da, transpose_B=True)
                gemm(b_D, b_dS, b_dkd, transpose_B=True)
                for i in sty.par(K):  # a row's running sum in a register, one shared write
                    b_one[0] = b_red[i]
                    for d in T.serial(BV):
                        b_one[0] = b_one[0] + T.cast(b_S[i, d], f32) * T.cast(b_dS[i, d], f32)
                    b_red[i] = b_one[0]
            for r, d in sty.par(n, K):
                dW[i_c, r, i_h, d] = b_dw[r, d]
                dKd[i_c, r, i_h, d] = b_dkd[r, d]
            for i, d in sty.par(C, K):
                dQg[i_c, i, i_h, d] = b_dqg[i, d]
            for i, s in sty.par(C, n):
                dAqk[i_c, i, i_h, s] = b_da[i, s]
            for _i in sty.par(1):  # one thread, a register accumulator (no shared read-write in a branch)
                b_one[0] = T.float32(0)
                for j in T.serial(K):
                    b_one[0] = b_one[0] + b_red[j]
                dDec[i_c, i_h] = b_one[0]

    return eda_chunk_grads


#: kernel kind -> (generator, shared-memory estimate); ``kernel_specs`` names the kinds a config uses
GENERATORS = {
    "intra": (intra_kernel, intra_smem),
    "recurrence": (recurrence_kernel, recurrence_smem),
    "tm": (tm_kernel, tm_smem),
    "recurrence_tm": (recurrence_tm_kernel, recurrence_tm_smem),
    "states": (states_kernel, states_smem),
    "dstates": (dstates_kernel, dstates_smem),
    "intra_bwd": (intra_bwd_kernel, intra_bwd_smem),
    "chunk_grads": (chunk_grads_kernel, chunk_grads_smem),
}
