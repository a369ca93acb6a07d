"""What the 16-bit scratch of the Triton backward costs in accuracy, buffer by buffer (CPU).

    TRITON_INTERPRET=1 python3 benchmarks/scratch_precision.py [--out results/bench/scratch_precision_cpu.json]

Under Triton's interpreter the kernels' dots take float32 operands (``_dot_dtype``), so the only
16-bit rounding left in a bf16 problem's backward is the scratch it stores: the recomputed W and U,
the chunk states h and the state gradients dh (``chunk._scratch_dtype``). This runs one bf16
training problem with each of them in float32 in turn and the others in bf16
(``chunk.scratch_override``; by default U is float32 since H200 run 50), all of them, and none,
beside the torch backend (float32 inside), every error against the float64 reference
(relative norm, two seeds). On a GPU the dots add their own 16-bit operand rounding; this isolates
the storage part.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

from eda_tune.backends.registry import all_backends  # noqa: E402
from eda_tune.checking import make_inputs, reference_outputs, run_and_check  # noqa: E402
from eda_tune.problem import Problem  # noqa: E402
from kernel_variants.triton.chunk import TritonParams, params_call, scratch_override  # noqa: E402

PROBLEM = Problem(B=1, T=256, H=2, K=32, V=32, dtype="bfloat16", gate=True, initial_state=True, final_state=True,
                  training=True, device="cpu")
VARIANTS = {"all 16-bit": (), "w fp32": ("w",), "u fp32": ("u",), "h fp32": ("h",), "dh fp32": ("dh",),
            "all fp32": ("w", "u", "h", "dh")}
KEYS = ("dq", "dk", "de", "dv", "dg", "dbeta", "dgamma", "dinitial_state")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/bench/scratch_precision_cpu.json")
    args = ap.parse_args()
    params = TritonParams(BT=16, BK=32, BV=32)
    torch_be = next(b for b in all_backends() if b.name == "torch")
    torch_fn = torch_be.build(PROBLEM)

    ours = params_call(params)

    def theirs(**kw):
        return torch_fn(scale=kw["q"].shape[-1] ** -0.5, **kw)

    rows = []
    for seed in (0, 1):
        inputs = make_inputs(PROBLEM, seed, requires_grad=True)
        ref = reference_outputs(inputs, grads=True, seed=seed)
        runs = [("torch backend", theirs, ())] + [(n, ours, b) for n, b in VARIANTS.items()]
        for label, fn, bufs in runs:
            for x in inputs.values():
                if isinstance(x, torch.Tensor):
                    x.grad = None
            with scratch_override({n: torch.float32 if n in bufs else PROBLEM.torch_dtype
                                   for n in ("w", "u", "h", "dh")}):
                res = run_and_check(fn, PROBLEM, seed=seed, reference=ref, inputs=inputs)
            rows.append({"seed": seed, "variant": label, "errors": res.errors})
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        import triton

        json.dump({"problem": PROBLEM.to_dict(), "device": "cpu (TRITON_INTERPRET=1)",
                   "versions": {"torch": torch.__version__, "triton": triton.__version__}, "rows": rows}, f, indent=1)
    print(f"{'variant':<16}" + "".join(f"{k[:10]:>11}" for k in KEYS) + "   (mean of two seeds)")
    for label in ["torch backend", *VARIANTS]:
        errs = [r["errors"] for r in rows if r["variant"] == label]
        print(f"{label:<16}" + "".join(f"{sum(e[k] for e in errs) / len(errs):11.2e}" for k in KEYS))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
