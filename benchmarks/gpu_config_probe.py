"""Check one Triton config and variants of it against the float64 reference on a GPU (or on CPU
under TRITON_INTERPRET=1): which setting breaks a config that fails the tuner's check.

    PROBE_CONFIG='{"BT": 32, ...}' PROBE_VARIANTS='{"old_intra": {"bk_intra": 64}}' \
        OUT=$OUT python3 benchmarks/gpu_config_probe.py

PROBE_CONFIG: a search-space config (JSON; missing keys take the space's defaults); PROBE_VARIANTS:
name -> TritonParams overrides (JSON; "base" is always run); PROBE_PROBLEMS: a comma list of
B:T:H:K:V (default 1:4096:4:128:128 and 2:16384:16:128:128 on a GPU). Every gradient is checked in
bf16 with the gate, initial and final state (eda_tune.checking.run_and_check). Prints one line a
variant and problem; writes $OUT/probe.json.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import torch

from eda_tune.checking import run_and_check
from eda_tune.problem import Problem
from kernel_variants.triton.backend import TritonBackend
from kernel_variants.triton.chunk import TritonParams, params_call

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"


def main() -> None:
    backend = TritonBackend()
    given = json.loads(os.environ.get("PROBE_CONFIG", "{}"))
    variants = {"base": {}, **json.loads(os.environ.get("PROBE_VARIANTS", "{}"))}
    default = "1:4096:4:128:128,2:16384:16:128:128" if CUDA else "1:40:2:32:32"
    shapes = [tuple(int(x) for x in s.split(":")) for s in os.environ.get("PROBE_PROBLEMS", default).split(",")]
    out = os.environ.get("OUT", "/tmp")
    rows = []
    t0 = time.time()
    for B, T, H, K, V in shapes:
        problem = Problem(B=B, T=T, H=H, K=K, V=V, dtype="bfloat16" if CUDA else "float32", gate=True,
                          initial_state=True, final_state=True, training=True, device=DEV)
        cfg = backend.default_config(problem).to_dict()
        cfg.update(given)
        base = TritonParams.from_config(cfg)
        for name, kw in variants.items():
            p = replace(base, **kw)
            res = run_and_check(params_call(p), problem, seed=1, grads=True)
            worst = max(res.errors.items(), key=lambda kv: kv[1]) if res.errors else ("-", float("nan"))
            rows.append({"problem": [B, T, H, K, V], "variant": name, "overrides": kw, "ok": res.ok,
                         "errors": res.errors, "reason": res.reason, "params": p.__dict__})
            print(f"[{time.time() - t0:6.1f}s] {B}:{T}:{H}:{K}:{V} {name:<14} ok={res.ok} worst {worst[0]} "
                  f"{worst[1]:.3e} {res.reason or ''}", flush=True)
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "probe.json"), "w") as f:
                json.dump({"card": torch.cuda.get_device_name(0) if CUDA else "cpu", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
