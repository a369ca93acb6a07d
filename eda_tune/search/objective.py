"""One trial's measurement: build a config, check it against the float64 reference, time it.

Runs wherever the runner puts it (an isolated worker process by default, see ``worker.py``). A job
and its result are plain dicts, so they cross a pipe. A result has ``ok``; on success ``time_ms``
(the median), ``p20_ms``, ``p80_ms``; on failure ``kind`` (``compile_error``, ``out_of_resources``,
``wrong_result``, ``runtime_error``, ``cuda_error``, ``setup_error``; the driver adds ``timeout``,
``crash`` and ``constraint``) and ``reason``. ``restart`` asks the runner for a fresh process (after
a CUDA error the context is unusable).

Checking (forward problems): the kernel runs on the full problem's inputs and its output is
compared, on ``check_heads`` heads of the first sequence (every sequence of a varlen call), with the
float64 recurrence of those heads alone: heads and sequences are independent, so this checks the
very kernel that is timed (one compile) at a fraction of the reference's cost. The inputs and the
reference are cached per (problem, seed). Training problems are checked with gradients on a
reduced problem (same K, V, dtype and options; B = 1, at most ``check_heads`` heads, T capped at
``check_T``) and timed forward + backward on the full one.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Mapping
from typing import Any

import torch

from eda_tune.backends import Backend, get_backend, register
from eda_tune.bench.timing import time_fn
from eda_tune.checking import grow_until_valid, make_inputs, reference_outputs, run_and_check
from eda_tune.errors import EdaInputError
from eda_tune.problem import Config, Problem

ARG_ORDER = ("q", "k", "v", "e", "g", "beta", "gamma")

_inputs_cache: dict[tuple[str, int], dict[str, Any]] = {}
_ref_cache: dict[tuple[str, int, int], tuple[dict[str, Any], dict[str, Any]]] = {}


def backend_spec(backend: Backend) -> str:
    """``module:Class`` of a backend, so a worker process can make one when its registry lacks it."""
    cls = type(backend)
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_backend(name: str, spec: str | None = None) -> Backend:
    """The registered backend ``name``; registered from ``spec`` when missing or of another class."""
    try:
        found: Backend | None = get_backend(name)
    except EdaInputError:
        found = None
    if found is not None and (spec is None or backend_spec(found) == spec):
        return found
    if spec is None:
        raise EdaInputError(f"backend {name!r} is not registered in the worker process")
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    backend = obj if isinstance(obj, Backend) else obj()
    return register(backend, replace=True)


def classify(err: BaseException) -> tuple[str, bool]:
    """(kind, restart) of an exception raised while building or running a config."""
    text = f"{type(err).__name__}: {err}"
    low = text.lower()
    if "illegal memory access" in low or "cuda error" in low or "device-side assert" in low \
            or "unspecified launch failure" in low or "misaligned address" in low:
        return "cuda_error", True
    if isinstance(err, torch.OutOfMemoryError) or "out of memory" in low or "outofresources" in low \
            or "out of resource" in low or "shared memory" in low:
        return "out_of_resources", False
    return "runtime_error", False


def _short(err: BaseException, limit: int = 600) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cached_inputs(problem: Problem, seed: int, requires_grad: bool = False) -> dict[str, Any]:
    key = (problem.key + (":grad" if requires_grad else ""), seed)
    if key not in _inputs_cache:
        _inputs_cache.clear()  # one problem at a time: S1's inputs are hundreds of MB on the card
        _ref_cache.clear()
        _inputs_cache[key] = make_inputs(problem, seed, requires_grad=requires_grad)
    return _inputs_cache[key]


def _slice(inputs: Mapping[str, Any], problem: Problem, nb: int, nh: int) -> dict[str, Any]:
    out = dict(inputs)
    for name in ARG_ORDER:
        x = inputs[name]
        if isinstance(x, torch.Tensor):
            out[name] = x[:nb, :, :nh]
    if isinstance(inputs.get("initial_state"), torch.Tensor):
        n_seq = problem.num_seqs if problem.varlen else nb
        out["initial_state"] = inputs["initial_state"][:n_seq, :nh]
    return out


def _args(inputs: Mapping[str, Any], problem: Problem) -> tuple[Any, ...]:
    return (*(inputs[n] for n in ARG_ORDER), problem.K ** -0.5, inputs["initial_state"],
            inputs["output_final_state"], inputs["cu_seqlens"], inputs["use_qk_l2norm_in_kernel"])


def _check_forward(kernel: Any, problem: Problem, seed: int, check_heads: int) -> tuple[Any, dict[str, Any]]:
    full = _cached_inputs(problem, seed)
    nb, nh = 1, min(problem.H, max(check_heads, 1))
    rkey = (problem.key, seed, nh)
    if rkey not in _ref_cache:
        small = _slice(full, problem, nb, nh)
        _ref_cache[rkey] = (small, reference_outputs(small, grads=False, seed=seed))
    small, ref = _ref_cache[rkey]
    args = _args(full, problem)
    n_seq = problem.num_seqs if problem.varlen else nb

    def sliced(**_: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        o, final = kernel(*args)
        return o[:nb, :, :nh], (None if final is None else final[:n_seq, :nh])

    res = run_and_check(sliced, problem, seed=seed, grads=False, reference=ref, inputs=small)
    return res, full


def reduced_problem(problem: Problem, check_heads: int, check_T: int, backend: Backend | None = None,
                    config: Config | None = None) -> Problem:
    """The problem a training trial's gradients are checked at: one sequence (varlen: as many
    as fit) of at most ``check_T`` tokens and ``check_heads`` heads; with ``backend`` and
    ``config``, longer where the config does not fit that (``grow_until_valid``)."""
    T = min(problem.T, check_T)
    num_seqs = min(problem.num_seqs, T) if problem.varlen else 0
    small = problem.replace(B=1, H=min(problem.H, max(check_heads, 1)), T=T, num_seqs=num_seqs)
    if backend is None or config is None:
        return small
    return grow_until_valid(small, problem, lambda p: backend.check_config(p, config)[0])


def evaluate(job: Mapping[str, Any]) -> dict[str, Any]:
    """Measure one config: ``job`` has backend, backend_spec, problem (dict), config (dict), seed,
    check_heads, check_T, warmup_ms, rep_ms. Never raises; every failure is a result."""
    t_start = time.perf_counter()
    out: dict[str, Any] = {"ok": False}
    phase = "setup"
    try:
        backend = resolve_backend(job["backend"], job.get("backend_spec"))
        problem = Problem.from_dict(job["problem"])
        config = Config.from_dict(job["config"])
        seed = int(job.get("seed", 0))
        check_heads = int(job.get("check_heads", 2))
        ok, why = backend.check_config(problem, config)
        if not ok:
            return {"ok": False, "kind": "constraint", "phase": "constraint", "reason": why}
        phase = "build"
        t0 = time.perf_counter()
        kernel = backend.build(problem, config)
        out["build_s"] = round(time.perf_counter() - t0, 4)
        phase = "check"
        t0 = time.perf_counter()
        if problem.training:
            small_p = reduced_problem(problem, check_heads, int(job.get("check_T", 1024)), backend, config)
            small_kernel = backend.build(small_p, config)
            small_in = make_inputs(small_p, seed, requires_grad=True)

            def small_fn(**kw: Any) -> Any:
                return small_kernel(*_args(kw, small_p))

            res = run_and_check(small_fn, small_p, seed=seed, grads=True, inputs=small_in)
            full = _cached_inputs(problem, seed, requires_grad=True)
        else:
            res, full = _check_forward(kernel, problem, seed, check_heads)
        out["check_s"] = round(time.perf_counter() - t0, 4)
        out["errors"] = {k: (float(v) if v == v and v != float("inf") else None) for k, v in res.errors.items()}
        if not res.ok:
            out.update(kind="wrong_result", phase=phase, reason=f"wrong result: {res.reason}")
            return out
        phase = "time"
        args = _args(full, problem)
        if job.get("compile_only"):  # a precompile pass: every kernel built and run once, no timing
            kernel(*args)
            if problem.device == "cuda":
                torch.cuda.synchronize()
            out.update(ok=True, compile_only=True)
            return out
        if problem.training:
            gen = torch.Generator().manual_seed(seed + 11)
            o0, _ = kernel(*args)
            do = torch.randn(o0.shape, generator=gen).to(o0.device, o0.dtype)

            def fn() -> Any:
                o, _ = kernel(*args)
                o.backward(do)
                return o
        else:
            def fn() -> Any:
                return kernel(*args)
        # no torch.no_grad() here: the check ran with grad mode on, and a compiled kernel would
        # recompile for the other mode (the inputs need no grad, so no graph is recorded anyway)
        timing = time_fn(fn, problem.device, warmup_ms=float(job.get("warmup_ms", 25.0)),
                         rep_ms=float(job.get("rep_ms", 100.0)))
        out.update(ok=True, time_ms=float(timing.median_ms), p20_ms=float(timing.p20_ms),
                   p80_ms=float(timing.p80_ms), method=timing.method)
        return out
    except BaseException as err:  # noqa: BLE001 - a trial's failure is data, not a crash of the study
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        kind, restart = classify(err)
        if phase == "build" and kind == "runtime_error":
            kind = "compile_error"
        if phase == "setup":
            kind = "setup_error"
        out.update(kind=kind, phase=phase, reason=f"{kind.replace('_', ' ')} ({phase}): {_short(err)}",
                   restart=restart, traceback=traceback.format_exc(limit=6)[-2000:])
        return out
    finally:
        out["wall_s"] = round(time.perf_counter() - t_start, 4)
