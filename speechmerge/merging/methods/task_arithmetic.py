"""Task Arithmetic (Ilharco et al., ICLR 2023, "Editing models with task arithmetic").

    Δ = λ · Σ_i τ_i.

Defaults: ``scaling`` λ = 0.3, the project's choice: the paper has no fixed λ (it picks λ on
held-out validation data from a 0.05-step grid in [0, 1]) and FusionBench's
``config/method/task_arithmetic.yaml`` sets ``scaling_factor: 0.5``; sweep it with
``task_arithmetic@scaling=...`` variants. Every tensor (matrices and the rest) is treated alike.
"""

from __future__ import annotations

from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.methods._common import StreamingMethod, TensorSource, check_number, weighted_sum


@register
class TaskArithmetic(StreamingMethod):
    """Task Arithmetic: Δ = λ Σ_i τ_i."""

    name = "task_arithmetic"
    defaults = {"scaling": 0.3}
    source = "Ilharco et al. 2023 (lambda tuned on validation; 0.3 = project default, FusionBench 0.5)"

    def validate(self) -> None:
        check_number(self, "scaling")

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        lam = float(self.hparams["scaling"])
        for rows in src.chunks():
            yield weighted_sum(src.deltas(rows), [lam] * src.n)
