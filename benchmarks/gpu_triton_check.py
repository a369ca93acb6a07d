"""GPU check and quick timing of the Triton EDA backend (run on the device machine).

Timings first (triton.testing.do_bench, median): our default config forward at S1-S4 (with the
split over the forward's kernels), fuse_o, forward+backward at S1, peak memory of
forward+backward at S1, a small config sweep at S1; fla gated_delta_product (n=2) and
gated_delta_rule at S1 with EDA_CHECK_FLA=1 (about 3 minutes of fla autotuning). Then
correctness, forward and backward, against the float64 recurrence at small shapes (bf16, fp32
tf32/ieee, varlen, K = V = 256, fuse_o).

Writes JSON to $OUT/triton_check.json after every step; prints a table last.
Env: EDA_QUICK=1 fewer shapes; EDA_SWEEP=0 no sweep; EDA_CHECK_DEVICE=cpu (with
TRITON_INTERPRET=1) to try the check functions on the CPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import torch
import triton
from triton.testing import do_bench

sys.path.insert(0, os.getcwd())

from eda_tune.problem import Problem  # noqa: E402
from eda_tune.reference import naive_recurrent_eda  # noqa: E402
from kernel_variants.triton.chunk import TritonParams, chunk_eda_fwd, chunk_eda_triton  # noqa: E402

OUT = os.environ.get("OUT", "results/bench")
os.makedirs(OUT, exist_ok=True)
DEV = os.environ.get("EDA_CHECK_DEVICE", "cuda")
T0 = time.time()
RES: dict = {"card": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
             "triton": triton.__version__, "checks": [], "timings": [], "memory": [], "errors": []}
try:
    from importlib.metadata import version
    RES["fla"] = version("fla-core")
except Exception:
    RES["fla"] = None

DEFAULT = TritonParams()


def save() -> None:
    with open(os.path.join(OUT, "triton_check.json"), "w") as f:
        json.dump(RES, f, indent=1)


def log(*a) -> None:
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("nan")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def inputs(B, T, H, K, V, dtype, gate=True, h0=False, cu=None, seed=0, grad=False):
    gen = torch.Generator(device=DEV).manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=gen, device=DEV)
    q = r(B, T, H, K)
    k = torch.nn.functional.normalize(r(B, T, H, K), dim=-1)
    e = torch.nn.functional.normalize(r(B, T, H, K), dim=-1)
    v = r(B, T, H, V)
    beta = torch.rand(B, T, H, generator=gen, device=DEV) * 0.98 + 0.01
    gamma = torch.rand(B, T, H, generator=gen, device=DEV) * 0.98 + 0.01
    g = torch.nn.functional.logsigmoid(r(B, T, H)) / 16 if gate else None
    N = B if cu is None else len(cu) - 1
    d = dict(q=q.to(dtype), k=k.to(dtype), v=v.to(dtype), e=e.to(dtype), g=g, beta=beta, gamma=gamma,
             initial_state=(r(N, H, K, V) * 0.5) if h0 else None,
             cu_seqlens=torch.tensor(cu, dtype=torch.int32, device=DEV) if cu is not None else None)
    if grad:
        for n in ("q", "k", "v", "e", "g", "beta", "gamma", "initial_state"):
            if d[n] is not None:
                d[n].requires_grad_(True)
    return d


NAMES = ("q", "k", "v", "e", "g", "beta", "gamma", "initial_state")


def ours(d, p=DEFAULT, final=True):
    K = d["q"].shape[-1]
    return chunk_eda_triton(d["q"], d["k"], d["v"], d["e"], d["g"], d["beta"], d["gamma"], K ** -0.5,
                            d["initial_state"], final, d["cu_seqlens"], False, p)


def ref(d, final=True):
    d64 = {n: (d[n].detach().double().requires_grad_(d[n].requires_grad) if d[n] is not None else None)
           for n in NAMES}
    K = d["q"].shape[-1]
    o, ht = naive_recurrent_eda(d64["q"], d64["k"], d64["v"], d64["e"], d64["g"], d64["beta"],
                                d64["gamma"], K ** -0.5, d64["initial_state"], final,
                                d["cu_seqlens"])
    return o, ht, d64


def check(name, B, T, H, K, V, dtype, p=DEFAULT, gate=True, h0=True, cu=None, grads=True, fla=False):
    d = inputs(B, T, H, K, V, dtype, gate=gate, h0=h0, cu=cu, grad=grads, seed=hash(name) % 1000)
    rec = {"name": name, "shape": [B, T, H, K, V], "dtype": str(dtype), "config": p.__dict__,
           "varlen": cu is not None, "gate": gate}
    o, ht = ours(d, p)
    ro, rht, d64 = ref(d)
    rec["fwd_o"], rec["fwd_ht"] = rel(o, ro), rel(ht, rht)
    if grads:
        gen = torch.Generator(device=DEV).manual_seed(1)
        do = torch.randn(o.shape, generator=gen, device=DEV)
        dht = torch.randn(ht.shape, generator=gen, device=DEV)
        xs = [d[n] for n in NAMES if d[n] is not None]
        gs = torch.autograd.grad((o.float() * do).sum() + (ht * dht).sum(), xs)
        rs = torch.autograd.grad((ro * do.double()).sum() + (rht * dht.double()).sum(),
                                 [d64[n] for n in NAMES if d[n] is not None])
        rec["grads"] = {n: rel(a, b) for n, a, b in zip([n for n in NAMES if d[n] is not None], gs, rs)}
    if fla:
        try:
            from eda_tune.bench.baselines import FLA_GDP
            prob = Problem(B=B, T=T, H=H, K=K, V=V, dtype="bfloat16", gate=gate, initial_state=h0,
                           final_state=True)
            fn = FLA_GDP.build(prob)
            with torch.no_grad():
                fo, fht = fn(**{n: (d[n].detach() if d[n] is not None else None) for n in NAMES},
                             output_final_state=True, cu_seqlens=d["cu_seqlens"])
            rec["fla_fwd_o"], rec["fla_fwd_ht"] = rel(fo, ro), rel(fht, rht)
        except Exception as err:
            rec["fla_error"] = f"{type(err).__name__}: {err}"
    RES["checks"].append(rec)
    save()
    log("check", name, {k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in rec.items()
                        if k.startswith(("fwd", "fla"))},
        {k: f"{v:.1e}" for k, v in rec.get("grads", {}).items()})


def bench(fn, grad_to_none=None):
    return do_bench(fn, warmup=25, rep=100, return_mode="median", grad_to_none=grad_to_none)


SHAPES = {"S1": (8, 4096, 16, 128), "S2": (2, 16384, 16, 128), "S3": (8, 4096, 32, 64),
          "S4": (1, 32768, 8, 128), "S5": (4, 4096, 8, 256)}


def time_ours(shape, p=DEFAULT, mode="fwd", tag="default"):
    B, T, H, D = SHAPES[shape]
    d = inputs(B, T, H, D, D, torch.bfloat16, grad=(mode == "fwdbwd"))
    rec = {"shape": shape, "impl": "triton", "tag": tag, "mode": mode, "config": p.__dict__}
    if mode == "fwd":
        with torch.no_grad():
            rec["ms"] = bench(lambda: ours(d, p, final=False))
            if tag == "default":
                for s in (1, 2):
                    rec[f"ms_stages{s}"] = bench(lambda s=s: chunk_eda_fwd(
                        d["q"], d["k"], d["v"], d["e"], d["g"], d["beta"], d["gamma"], D ** -0.5, None,
                        False, None, None, p, stages=s))
    else:
        do = torch.randn(B, T, H, D, device=DEV, dtype=torch.bfloat16)
        xs = [d[n] for n in NAMES if d[n] is not None]

        def step():
            o, _ = ours(d, p, final=False)
            o.backward(do)
        rec["ms"] = bench(step, grad_to_none=xs)
        if tag == "default" and p.bwd_intra == "triton":
            # the backward's pieces: recompute (W, U, states), + reverse recurrence, + intra
            from kernel_variants.triton.chunk import chunk_eda_bwd_triton
            args = [d[n].detach() if d[n] is not None else None for n in NAMES]
            for s in (1, 2, 3):
                rec[f"bwd_ms_stages{s}"] = bench(lambda s=s: chunk_eda_bwd_triton(
                    *args[:7], D ** -0.5, args[7], None, None, do, None, p, stages=s))
    RES["timings"].append(rec)
    save()
    log("time", rec)
    return rec


def time_fla(shape, which="fla_gdp", mode="fwd"):
    from eda_tune.bench.baselines import BASELINES
    B, T, H, D = SHAPES[shape]
    bl = BASELINES[which]
    d = inputs(B, T, H, D, D, torch.bfloat16, grad=(mode == "fwdbwd"))
    fn = bl.build(Problem(B=B, T=T, H=H, K=D, V=D, dtype="bfloat16"))
    args = {n: d[n] for n in NAMES}
    rec = {"shape": shape, "impl": which, "mode": mode}
    if mode == "fwd":
        with torch.no_grad():
            fn(**args)
            rec["ms"] = bench(lambda: fn(**args))
    else:
        do = torch.randn(B, T, H, D, device=DEV, dtype=torch.bfloat16)
        xs = [d[n] for n in NAMES if d[n] is not None]

        def step():
            o, _ = fn(**args)
            o.backward(do)
        step()
        rec["ms"] = bench(step, grad_to_none=xs)
    RES["timings"].append(rec)
    save()
    log("time", rec)
    return rec


def peak_mem(shape, which, p=DEFAULT):
    """Peak extra memory of one forward+backward: ours (``which == "triton"``, config ``p``) or a
    baseline of eda_tune.bench.baselines."""
    B, T, H, D = SHAPES[shape]
    d = inputs(B, T, H, D, D, torch.bfloat16, grad=True)
    do = torch.randn(B, T, H, D, device=DEV, dtype=torch.bfloat16)
    if which == "triton":
        def run():
            o, _ = ours(d, p, final=False)
            o.backward(do)
    else:
        from eda_tune.bench.baselines import BASELINES
        fn = BASELINES[which].build(Problem(B=B, T=T, H=H, K=D, V=D, dtype="bfloat16"))

        def run():
            o, _ = fn(**{n: d[n] for n in NAMES})
            o.backward(do)
    run()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    rec = {"shape": shape, "impl": which, "config": p.__dict__ if which == "triton" else None,
           "peak_extra_MiB": (torch.cuda.max_memory_allocated() - base) / 2**20}
    RES["memory"].append(rec)
    save()
    log("mem", rec)


def guarded(f, *a, **kw):
    try:
        return f(*a, **kw)
    except Exception as err:
        RES["errors"].append(f"{f.__name__}{a}: {type(err).__name__}: {err}")
        save()
        log("ERROR", f.__name__, a, type(err).__name__, err)
        traceback.print_exc(limit=3)
        return None


def main() -> None:
    fla = os.environ.get("EDA_CHECK_FLA", "0") == "1"
    bf, f32 = torch.bfloat16, torch.float32
    quick = os.environ.get("EDA_QUICK", "0") == "1"
    if not quick:
        guarded(check, "bf16-H16", 1, 300, 16, 128, 128, bf, fla=fla)
    # timings first: a hang or a slow compile further down must not cost them
    for s in (("S1", "S4") if quick else ("S1", "S2", "S3", "S4")):
        guarded(time_ours, s)
    guarded(time_ours, "S1", TritonParams(fuse_o=True), tag="sweep")
    guarded(time_ours, "S4", TritonParams(fuse_o=True), tag="sweep")
    guarded(time_ours, "S1", mode="fwdbwd")
    guarded(peak_mem, "S1", "triton")
    if os.environ.get("EDA_SWEEP", "1") == "1":
        for kw in ({"BT": 64}, {"BT": 16}, {"warps_h": 8}, {"fuse_o": True, "BV": 32}):
            guarded(time_ours, "S1", TritonParams(**kw), tag="sweep")
    if fla:
        guarded(time_fla, "S1", "fla_gdp", "fwd")
        guarded(time_fla, "S1", "fla_gdr", "fwd")
        guarded(time_fla, "S1", "fla_gdp", "fwdbwd")
        guarded(peak_mem, "S1", "fla_gdp")
    guarded(check, "bf16-fuse_o", 1, 300, 16, 128, 128, bf, p=TritonParams(fuse_o=True), grads=False)
    guarded(check, "fp32-tf32", 1, 200, 2, 128, 128, f32)
    guarded(check, "bf16-K256", 1, 130, 2, 256, 256, bf, p=TritonParams(BV=32))
    guarded(check, "bf16-varlen", 1, 300, 2, 128, 128, bf, cu=[0, 7, 150, 151, 300])
    guarded(check, "fp32-ieee-varlen", 1, 300, 2, 64, 64, f32, p=TritonParams(precision="ieee"),
            cu=[0, 7, 150, 151, 300])

    report()


def report() -> None:
    """The table of the checks and timings so far (printed last)."""
    print("\n=== checks (rel err vs float64) ===")
    for c in RES["checks"]:
        gm = max(c.get("grads", {"-": 0.0}).values())
        print(f"{c['name']:18s} o {c['fwd_o']:.1e} ht {c['fwd_ht']:.1e} grad-max {gm:.1e}"
              f" fla {c.get('fla_fwd_o', float('nan')):.1e}")
    print("=== timings (ms, median) on", RES["card"], "===")
    for t in RES["timings"]:
        cfg = "" if t["impl"] != "triton" else ",".join(f"{k}={v}" for k, v in t["config"].items()
                                                        if getattr(DEFAULT, k) != v) or "default"
        extra = "".join(f" s{s}={t[f'ms_stages{s}']:.3f}" for s in (1, 2) if f"ms_stages{s}" in t)
        print(f"{t['shape']} {t['impl']:8s} {t['mode']:6s} {t['ms']:8.3f} {cfg}{extra}")
    for m in RES["memory"]:
        print(f"mem {m['shape']} {m['impl']} {m['peak_extra_MiB']:.0f} MiB")
    for e in RES["errors"]:
        print("ERR", e[:300])


if __name__ == "__main__":
    main()
