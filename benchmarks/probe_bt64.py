"""Probe: which part of the Triton backward faults at BT=64 (the seed {BT: 64, BV: 32, fuse_o: false,
num_warps: 8, warps_h: 8} failed every training study with an illegal memory access, run 42) on a
GPU. Each case and stage of ``chunk_eda_bwd_triton`` (1: recompute, 2: + dS scan and grad kernel,
3: + intra kernel) in its own process with CUDA_LAUNCH_BLOCKING=1 (a fault poisons the context).

    python3 benchmarks/probe_bt64.py     # run 44: results/bench/probe_bt64_h200_run44.txt
"""
import json
import os
import subprocess
import sys

CASES = {
    "seed": {},
    "warps_h4": {"warps_h": 4},
    "triton2": {"bwd_intra": "triton2"},
    "K64": {},
}

if len(sys.argv) == 1:
    for name in CASES:
        for stage in (1, 2, 3):
            r = subprocess.run([sys.executable, __file__, name, str(stage)], capture_output=True, text=True,
                               env={**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}, timeout=120)
            tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
            print(f"{name} stage {stage}: rc {r.returncode} {tail[0][:300]}", flush=True)
            if r.returncode:
                break
    sys.exit(0)

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dataclasses import replace  # noqa: E402

from eda_tune.checking import make_inputs  # noqa: E402
from eda_tune.problem import Problem  # noqa: E402
from kernel_variants.triton.chunk import TritonParams, chunk_eda_bwd_triton  # noqa: E402

name, stage = sys.argv[1], int(sys.argv[2])
K = 64 if name == "K64" else 128
p = replace(TritonParams(BT=64, BV=32, fuse_o=False, num_warps=8, warps_h=8), **CASES[name])
prob = Problem(B=1, T=1024, H=2, K=K, V=K, dtype="bfloat16", gate=True, training=True, device="cuda")
d = make_inputs(prob, seed=0)
do = torch.randn(1, 1024, 2, K, device="cuda", dtype=torch.bfloat16)
out = chunk_eda_bwd_triton(d["q"], d["k"], d["v"], d["e"], d["g"], d["beta"], d["gamma"], K ** -0.5, None,
                           None, None, do, None, p, stages=stage)
torch.cuda.synchronize()
print(json.dumps({"ok": True, "finite": all(bool(torch.isfinite(x).all()) for x in out if x is not None)}))
