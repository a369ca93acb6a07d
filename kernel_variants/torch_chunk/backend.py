"""Backends ``torch`` (eager) and ``torch_compile`` over the chunked form of ``chunk.py``."""

from __future__ import annotations

import torch

from eda_tune.backends.base import Backend, EdaKernel
from eda_tune.problem import Config, Problem
from kernel_variants.torch_chunk.chunk import EAGER, ChunkFns, chunk_eda_torch, intra, step


def _kernel(config: Config, fns: ChunkFns) -> EdaKernel:
    chunk_size = int(config["chunk_size"])
    solver = str(config["solver"])

    def run(q, k, v, e, g, beta, gamma, scale, initial_state, output_final_state, cu_seqlens,
            use_qk_l2norm_in_kernel):
        seqlens = [int(x) for x in cu_seqlens.tolist()] if cu_seqlens is not None else None
        o, final = chunk_eda_torch(q, k, v, e, g, beta, gamma, scale, initial_state, output_final_state,
                                   seqlens, use_qk_l2norm_in_kernel, chunk_size, solver, fns)
        return o.to(v.dtype), final

    return run


class TorchBackend(Backend):
    """The chunked form run eagerly: the slow, simple baseline (also float64)."""

    name = "torch"
    priority = 90

    def is_available(self) -> tuple[bool, str]:
        return True, ""

    def _build(self, problem: Problem, config: Config) -> EdaKernel:
        return _kernel(config, EAGER)


class TorchCompileBackend(Backend):
    """The chunked form compiled by torch.compile (Inductor: Triton on CUDA, C++ on CPU)."""

    name = "torch_compile"
    priority = 50

    def is_available(self) -> tuple[bool, str]:
        if not hasattr(torch, "compile"):
            return False, "this torch has no torch.compile"
        return True, ""

    def supports(self, problem: Problem) -> tuple[bool, str]:
        ok, why = super().supports(problem)
        if ok and problem.dtype == "float64" and problem.device == "cuda":
            return False, "float64 on CUDA is left to the eager torch backend"
        return ok, why

    def _build(self, problem: Problem, config: Config) -> EdaKernel:
        mode = str(config["mode"])
        # every (problem, config) is its own build, but dynamo keys its cache on the code object
        # of intra/step, which all builds share: allow one entry per build instead of 8 in all
        import torch._dynamo.config as dynamo_config

        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 256)
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 4096)
        compile_mode = None if mode == "default" else mode
        fns = ChunkFns(intra=torch.compile(intra, mode=compile_mode, fullgraph=True),
                       step=torch.compile(step, mode=compile_mode, fullgraph=True))
        return _kernel(config, fns)
