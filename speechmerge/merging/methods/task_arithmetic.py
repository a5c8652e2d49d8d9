"""Task Arithmetic (Ilharco et al., ICLR 2023, "Editing models with task arithmetic").

    Δ = λ · Σ_i τ_i.

Defaults: ``scaling`` λ = 0.3: the paper has no fixed λ (it picks λ on held-out validation data
from a 0.05-step grid in [0, 1]); FusionBench's ``config/method/task_arithmetic.yaml`` sets
``scaling_factor: 0.3`` (0.5 before April 2025), the value we follow; sweep it with
``task_arithmetic@scaling=...`` variants. Every tensor (matrices and the rest) is treated alike.
"""

from __future__ import annotations

from typing import Iterator

import torch

from speechmerge.merging.base import TensorContext, register
from speechmerge.merging.checks import check_number
from speechmerge.merging.streaming import StreamingMethod, TensorSource
from speechmerge.merging.tensor_ops import weighted_sum


@register
class TaskArithmetic(StreamingMethod):
    """Task Arithmetic: Δ = λ Σ_i τ_i."""

    name = "task_arithmetic"
    label = "Task Arithmetic"
    reference_url = "https://arxiv.org/abs/2212.04089"
    defaults = {"scaling": 0.3}
    source = "Ilharco et al. 2023 (lambda tuned on validation); lambda=0.3 as FusionBench task_arithmetic.yaml"
    grid = {"scaling": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}
    grid_source = "Ilharco et al. 2023 pick lambda on validation data from [0, 1]; 0.1 steps"
    scale_param = "scaling"

    def validate(self) -> None:
        check_number(self, "scaling")

    def merge_stream(self, src: TensorSource, ctx: TensorContext) -> Iterator[torch.Tensor]:
        lam = float(self.hparams["scaling"])
        for rows in src.chunks():
            yield weighted_sum(src.deltas(rows), [lam] * src.n)
