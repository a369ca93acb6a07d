"""Compile Triton kernels for sm_90a without a GPU and print registers and spills (STACK bytes)
from the cubin (the cuobjdump bundled with triton): a check that a kernel change compiles for
Hopper, and what it does to register pressure, on a machine with no GPU.

    python3 benchmarks/compile_probe.py            # the backward's kernels at S1 (K = V = 128, BV 64)
    python3 benchmarks/compile_probe.py --shape S5 # at S5's default (K = V = 256, BV 32)
    python3 benchmarks/compile_probe.py --fwd      # the forward's chunk-inverse and state kernels
    python3 benchmarks/compile_probe.py --intra    # the intra kernel: warps, K tiles, register caps

Both with fp32 and 16-bit per-chunk scratch; the state kernels (recompute, dS) once.
"""
import argparse
import os
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kernel_variants.triton import chunk_bwd as cb  # noqa: E402
from kernel_variants.triton import chunk_fwd as cf_  # noqa: E402


def probe(fn, types, consts, label, num_warps=4, num_stages=2, maxnreg=None):
    names = fn.arg_names
    sig = {n: types.get(n, "constexpr") for n in names}
    cst = {}
    for i, n in enumerate(names):
        if n in consts:
            sig[n] = "constexpr"
            cst[(i,)] = consts[n]
    src = ASTSource(fn=fn, signature=sig, constexprs=cst)
    options = {"num_warps": num_warps, "num_stages": num_stages}
    if maxnreg:
        options["maxnreg"] = maxnreg  # the launch option maxnreg (TritonParams.maxnreg_intra)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
        path = f.name
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    out = subprocess.run([tools, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if "REG" in l]
    print(label, line[0].strip() if line else out[-300:])

def run(scratch, K, BV, BVG, states):
    s = "*bf16" if scratch == "half" else "*fp32"
    common = {"H": 16, "K": K, "V": K, "BT": 16, "BK": K, "BV": BVG, "IS_VARLEN": False,
              "PREC": "tf32", "DT": tl.bfloat16, "USE_G": True}
    t = {n: "*bf16" for n in ("h", "dh", "w", "u", "do", "q", "k", "e", "v")}
    t.update({n: s for n in ("du", "dw", "dqg", "daqk", "dkd")})
    t.update({"ddec": "*fp32", "g": "*fp32", "beta": "*fp32", "gamma": "*fp32", "scale": "fp32",
              "cu_seqlens": "*i32", "chunk_indices": "*i32", "T": "i32", "NCT": "i32",
              "dq": "*bf16", "dk": "*bf16", "de": "*bf16", "dv": "*bf16", "dg": "*fp32",
              "dbeta": "*fp32", "dgamma": "*fp32"})
    probe(cb.eda_bwd_grad_kernel, t, dict(common, BV=BVG), f"grad  scratch={scratch} BV={BVG}", num_stages=3)
    probe(cb.eda_bwd_grad_kernel, t, dict(common, BV=BVG), f"grad  scratch={scratch} BV={BVG} warps_grad=8",
          num_warps=8, num_stages=3)
    ci = dict(common, BK=64, BV=BV, LOG2N=5)
    probe(cb.eda_bwd_intra_kernel, t, ci, f"intra scratch={scratch}")
    probe(cb.eda_bwd_intra2_kernel, t, dict(common, BK=64, BV=BV, LOG2N=4), f"intra2 scratch={scratch}")
    t.update({"NBH": "i32"})
    cf = dict(common, BKG=K, BVG=min(BVG, BV), BK=64, BV=BV, LOG2N=5)
    probe(cb.eda_bwd_fused_kernel, t, cf, f"fused scratch={scratch}")
    if states:
        st = dict(t, dht="*fp32", dh0="*fp32", chunk_offsets="*i32", kd="*bf16", dec="*fp32", vn="*bf16",
                  h0="*fp32", ht="*fp32", o="*bf16")
        for pre in (False, True):  # bwd_prefetch
            probe(cb.eda_bwd_dh_kernel, st, dict(common, BV=BV, USE_DHT=True, OPS=3, STORE_DH=True, STORE_DU=True,
                                                 PAIRS=False, PREFETCH=pre),
                  f"dh (dS scan) BV={BV} prefetch={pre}", num_stages=3)
        probe(cb.eda_bwd_dh_kernel, dict(st, tm="*bf16", beta="*fp32", gamma="*fp32"),
              dict(common, BV=BV, USE_DHT=True, OPS=3, STORE_DH=True, STORE_DU=True, PAIRS=False, PREFETCH=True,
                   USE_TM=True), f"dh (dS scan from Tm, bwd_h tm_dh) BV={BV}", num_stages=3)
        probe(cb.eda_bwd_dh_kernel, dict(st, tm="*bf16", beta="*fp32", gamma="*fp32"),
              dict(common, BV=BV, USE_DHT=True, OPS=3, STORE_DH=True, STORE_DU=True, PAIRS=False, PREFETCH=True,
                   USE_TM=True, TM_P=True), f"dh (dS scan from Tm off the chain, bwd_h tm_dhp) BV={BV}", num_stages=3)
        probe(cf_.eda_fwd_h_kernel, st, dict(common, BV=BV, USE_KD=False, STORE_H=True, STORE_VN=True,
                                             FUSE_O=False, USE_H0=False, STORE_HT=False, PAIRS=False),
              f"h (states recompute, bwd_h wu) BV={BV}")
        st2 = dict(st, tm="*bf16", v="*bf16", beta="*fp32", gamma="*fp32", vn="*fp32")
        probe(cf_.eda_fwd_h2_kernel, st2, dict(common, BV=BV, STORE_H=True, STORE_VN=True, FUSE_O=False,
                                               USE_H0=False, STORE_HT=False, VR=common["V"], PREFETCH=True,
                                               PAIRS=False),
              f"h2 (states recompute, bwd_h tm) BV={BV}")


def run_intra(K, BV):
    """The intra kernel (fp32 per-chunk gradients) at 2 and 4 warps, K tiles of 64 and 32, with and
    without a register cap (TritonParams warps_intra, bk_intra, maxnreg_intra)."""
    t = {n: "*bf16" for n in ("q", "k", "e", "v", "dq", "dk", "de", "dv")}
    t.update({n: "*fp32" for n in ("du", "dw", "dqg", "daqk", "dkd", "ddec", "g", "beta", "gamma", "dg", "dbeta",
                                   "dgamma")})
    t.update({"scale": "fp32", "cu_seqlens": "*i32", "chunk_indices": "*i32", "T": "i32", "NCT": "i32"})
    common = {"H": 16, "K": K, "V": K, "BT": 16, "BV": BV, "IS_VARLEN": False, "PREC": "tf32", "DT": tl.bfloat16,
              "USE_G": True, "LOG2N": 5}
    for warps, cap in ((4, None), (2, None), (4, 168), (2, 168), (2, 128)):
        for bk in (64, 32):
            probe(cb.eda_bwd_intra_kernel, t, dict(common, BK=bk), f"intra warps={warps} BK={bk} maxnreg={cap}",
                  num_warps=warps, maxnreg=cap)


def run_fwd(K, BV):
    """The forward's two kernels at the default (delta tm, fuse_o): the chunk inverse (both solvers,
    1 and 2 warps) and the state kernel with and without ``h_prefetch`` (4 warps)."""
    t = {n: "*bf16" for n in ("q", "k", "e", "v", "tm", "o", "h", "vn")}
    t.update({"g": "*fp32", "beta": "*fp32", "gamma": "*fp32", "h0": "*fp32", "ht": "*fp32", "scale": "fp32",
              "cu_seqlens": "*i32", "chunk_indices": "*i32", "chunk_offsets": "*i32", "T": "i32", "NCT": "i32"})
    common = {"H": 16, "K": K, "BT": 16, "USE_G": True, "IS_VARLEN": False, "PREC": "tf32", "DT": tl.bfloat16}
    for blocks in (False, True):
        for warps in (1, 2):
            probe(cf_.eda_fwd_tm_kernel, t, dict(common, BK=64, LOG2N=5, BLOCKS=blocks),
                  f"tm blocks={blocks} warps={warps}", num_warps=warps)
    for pre in (False, True):
        probe(cf_.eda_fwd_h2_kernel, t, dict(common, V=K, BK=K, BV=BV, STORE_H=False, STORE_VN=False, FUSE_O=True,
                                             USE_H0=False, STORE_HT=False, VR=K, PREFETCH=pre),
              f"h2 (fused output) BV={BV} prefetch={pre}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=["S1", "S5"], default="S1")
    ap.add_argument("--fwd", action="store_true", help="the forward's kernels instead of the backward's")
    ap.add_argument("--intra", action="store_true", help="the intra kernel at 2 and 4 warps, K tiles, register caps")
    a = ap.parse_args()
    K, BV = (256, 32) if a.shape == "S5" else (128, 64)
    if a.fwd:
        run_fwd(K, BV)
        sys.exit(0)
    if a.intra:
        run_intra(K, BV)
        sys.exit(0)
    for i, scratch in enumerate(("fp32", "half")):
        run(scratch, K, BV, 32, states=i == 0)
