"""Compile Triton kernels for sm_90a without a GPU and print registers and spills (STACK bytes)
from the cubin (the cuobjdump bundled with triton): a check that a kernel change compiles for
Hopper, and what it does to register pressure, on a machine with no GPU.

    python3 benchmarks/compile_probe.py      # the backward grad/intra/fused kernels, fp32 and 16-bit scratch
"""
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


def probe(fn, types, consts, label):
    names = fn.arg_names
    sig = {n: types.get(n, "constexpr") for n in names}
    cst = {}
    for i, n in enumerate(names):
        if n in consts:
            sig[n] = "constexpr"
            cst[(i,)] = consts[n]
    src = ASTSource(fn=fn, signature=sig, constexprs=cst)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 2})
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
        path = f.name
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    out = subprocess.run([tools, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if "REG" in l]
    print(label, line[0].strip() if line else out[-300:])

def run(scratch):
    s = "*bf16" if scratch == "half" else "*fp32"
    common = {"H": 16, "K": 128, "V": 128, "BT": 16, "BK": 128, "BV": 64, "IS_VARLEN": False,
              "PREC": "tf32", "DT": tl.bfloat16, "USE_G": True}
    t = {n: "*bf16" for n in ("h", "dh", "w", "u", "do", "q", "k", "e", "v")}
    t.update({n: s for n in ("du", "dw", "dqg", "daqk", "dkd")})
    t.update({"ddec": "*fp32", "g": "*fp32", "beta": "*fp32", "gamma": "*fp32", "scale": "fp32",
              "cu_seqlens": "*i32", "chunk_indices": "*i32", "T": "i32", "NCT": "i32",
              "dq": "*bf16", "dk": "*bf16", "de": "*bf16", "dv": "*bf16", "dg": "*fp32",
              "dbeta": "*fp32", "dgamma": "*fp32"})
    probe(cb.eda_bwd_grad_kernel, t, common, f"grad  scratch={scratch}")
    ci = dict(common, BK=64, LOG2N=5)
    probe(cb.eda_bwd_intra_kernel, t, ci, f"intra scratch={scratch}")
    probe(cb.eda_bwd_intra2_kernel, t, dict(common, BK=64, LOG2N=4), f"intra2 scratch={scratch}")
    t.update({"NBH": "i32"})
    cf = dict(common, BKG=128, BVG=32, BK=64, BV=64, LOG2N=5)
    probe(cb.eda_bwd_fused_kernel, t, cf, f"fused scratch={scratch}")

if __name__ == "__main__":
    for scratch in ("fp32", "half"):
        run(scratch)
