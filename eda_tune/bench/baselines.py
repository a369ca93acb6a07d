"""Outside baselines from flash-linear-attention (fla-core 0.6.0), adapted to chunk_eda's keyword
inputs so that the same check and timing code runs them.

- ``fla_gdp``: ``chunk_gated_delta_product(num_householder=2)`` on the interleaved sequence of
  EDA_MATH.md: keys [e_1, k_1, e_2, k_2, ...], values [0, v_1, 0, v_2, ...], strengths
  [gamma_1, beta_1, ...]. fla interleaves g itself (g of token t on its first, erase, row; 0 on
  the write row) and reads q at T, so its output is already the one of every second micro-row.
  This computes EDA exactly: what an EDA user would run today.
- ``fla_gdr``: ``chunk_gated_delta_rule`` at T (Gated DeltaNet, no erase): the cost of the op
  without the erase. It equals EDA only when gamma == 0, so it is checked on such inputs.

fla needs bf16/fp16 q, k, v and a CUDA device; elsewhere these baselines say why they do not run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from eda_tune.problem import Problem

EdaCall = Callable[..., tuple[torch.Tensor, "torch.Tensor | None"]]


def interleave(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """[B, T, ...] x 2 -> [B, 2T, ...] with rows first_1, second_1, first_2, ... (differentiable)."""
    return torch.stack((first, second), dim=2).flatten(1, 2)


def fla_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("fla-core")
    except Exception:
        try:
            fla = importlib.import_module("fla")
            return str(getattr(fla, "__version__", "unknown"))
        except Exception:
            return None


@dataclass
class FlaBaseline:
    """One fla op behind chunk_eda's keyword interface."""

    name: str
    module: str
    function: str
    #: inputs must have gamma == 0 for the op to compute EDA (so checks draw them that way)
    gamma_zero: bool
    description: str
    supports_backward: bool = True

    def is_available(self) -> tuple[bool, str]:
        try:
            importlib.import_module(self.module)
        except Exception as err:  # fla absent, or its import fails (no triton, old torch)
            return False, f"cannot import {self.module}: {type(err).__name__}: {err}"
        return True, ""

    def supports(self, problem: Problem) -> tuple[bool, str]:
        if problem.device != "cuda":
            return False, f"{self.name} (fla) runs on CUDA only, not {problem.device!r}"
        if problem.dtype not in ("bfloat16", "float16"):
            return False, f"{self.name} (fla) needs bfloat16/float16 inputs, not {problem.dtype}"
        return True, ""

    def _op(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.function)  # type: ignore[no-any-return]

    def build(self, problem: Problem) -> EdaCall:
        op = self._op()
        scale = problem.K ** -0.5
        if self.name == "fla_gdp":
            def gdp(q, k, v, e, g, beta, gamma, initial_state=None, output_final_state=False,
                    cu_seqlens=None, use_qk_l2norm_in_kernel=False, **_: Any):
                keys = interleave(e, k)
                values = interleave(torch.zeros_like(v), v)
                strengths = interleave(gamma, beta)
                return op(q, keys, values, g, strengths, num_householder=2, scale=scale,
                          initial_state=initial_state, output_final_state=output_final_state,
                          use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                          cu_seqlens=None if cu_seqlens is None else cu_seqlens.long())
            return gdp

        def gdr(q, k, v, e, g, beta, gamma, initial_state=None, output_final_state=False,
                cu_seqlens=None, use_qk_l2norm_in_kernel=False, **_: Any):
            if g is None:  # fla's gated delta rule wants a gate: no decay is g == 0
                g = torch.zeros_like(beta)
            return op(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                      output_final_state=output_final_state,
                      use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                      cu_seqlens=None if cu_seqlens is None else cu_seqlens.long())
        return gdr


FLA_GDP = FlaBaseline(
    name="fla_gdp", module="fla.ops.gated_delta_product", function="chunk_gated_delta_product",
    gamma_zero=False,
    description="fla chunk_gated_delta_product(num_householder=2) on the interleaved 2T sequence")
FLA_GDR = FlaBaseline(
    name="fla_gdr", module="fla.ops.gated_delta_rule", function="chunk_gated_delta_rule",
    gamma_zero=True,
    description="fla chunk_gated_delta_rule at T (Gated DeltaNet: EDA without the erase)")

BASELINES: dict[str, FlaBaseline] = {b.name: b for b in (FLA_GDP, FLA_GDR)}
