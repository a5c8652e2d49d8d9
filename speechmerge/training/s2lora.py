"""S2-LoRA: sparsely shared LoRA (Liu et al., ICASSP 2024, arXiv 2309.11756), own implementation.

Formulation used here (the paper's abstract says the two low-rank matrices are "globally
shared" and each weight matrix only owns a sparse rank-coefficient vector; the exact sharing
granularity is not public; docs/methods.md, "S2-LoRA", lists what is confirmed and what is
ours). For every adapted linear layer m
(``target_modules``: q_proj k_proj v_proj out_proj fc1 fc2) with frozen weight
W_m in R^{out x in}:

    y = W_m x + b_m + s * B_s (c_m ⊙ (A_s dropout(x))),      s = alpha / r
    ΔW_m = s * B_s diag(c_m) A_s

* A_s in R^{r x in}, B_s in R^{out x r} are **shared by all adapted layers of the same shape
  s = (out, in)** -- one pair per distinct shape, i.e. "global" sharing across layers, encoder and
  decoder, attention and MLP, as far as shapes allow (Whisper has three shapes: d x d, 4d x d,
  d x 4d). This is our reading of "globally shared"; it is unconfirmed.
* c_m in R^r is layer m's rank-coefficient vector, the only per-layer parameter.
* Init: c_m = 0 (AdaLoRA's init of its singular values), so ΔW_m = 0; A_s and B_s
  kaiming-uniform (as VeRA's shared random matrices), so that the coefficients get a gradient
  from the first step and a coefficient of size c changes W by about c times a fixed random
  rank-1 direction (which A_s and B_s then also learn).
* Training loss: task loss + ``l1_weight * sum_m ||c_m||_1`` (``l1_penalty``), whose
  sub-gradient pulls every coefficient that the task does not need back to zero.
* After training, ``prune(threshold)`` zeroes every coefficient with |c| < threshold * max |c|
  (the largest over all layers; relative, so it does not depend on the learning rate or the
  number of steps); the learned rank of layer m is nnz(c_m) (``rank_allocation``).
* Trainable parameters: sum_s r (out_s + in_s) + r * (number of adapted layers).
* ``merge()`` writes W_m += ΔW_m and puts the plain ``nn.Linear`` back, so the model is a plain
  Whisper model again.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


#: the shared factors' submodule name on the adapted model (until merge)
FACTORS_NAME = "s2lora_factors"


def shape_key(out_features: int, in_features: int) -> str:
    return f"{out_features}x{in_features}"


class SharedFactors(nn.Module):
    """The shared A_s (r x in) and B_s (out x r) for every adapted weight shape s."""

    def __init__(self, shapes: Iterable[tuple[int, int]], r: int, device=None):
        super().__init__()
        self.r = r
        self.A = nn.ParameterDict()
        self.B = nn.ParameterDict()
        for out_f, in_f in sorted(set(shapes)):
            key = shape_key(out_f, in_f)
            a, b = torch.empty(r, in_f, device=device), torch.empty(out_f, r, device=device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.kaiming_uniform_(b, a=math.sqrt(5))
            self.A[key] = nn.Parameter(a)
            self.B[key] = nn.Parameter(b)


class S2LoRALinear(nn.Module):
    """``nn.Linear`` plus the S2-LoRA update; owns only its coefficient vector ``coef``."""

    def __init__(self, base: nn.Linear, factors: SharedFactors, scale: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.key = shape_key(base.out_features, base.in_features)
        self.scale = float(scale)
        self.coef = nn.Parameter(torch.zeros(factors.r, device=base.weight.device))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Plain attribute, not a submodule: the shared factors must not be registered (and
        # saved) once per layer.
        object.__setattr__(self, "_factors", factors)

    @property
    def A(self) -> nn.Parameter:
        return self._factors.A[self.key]

    @property
    def B(self) -> nn.Parameter:
        return self._factors.B[self.key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(self.dropout(x), self.A) * (self.coef * self.scale)
        return self.base(x) + F.linear(h, self.B)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s * B diag(c) A, shape (out, in)."""
        return (self.B * (self.coef * self.scale)) @ self.A


class S2LoRA:
    """Inject S2-LoRA into ``model`` in place (base weights frozen)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        target_modules: Iterable[str] = DEFAULT_TARGETS,
    ):
        if r < 1:
            raise ValueError(f"S2-LoRA rank r must be >= 1, got {r}")
        self.model = model
        self.r, self.alpha = int(r), float(alpha)
        targets = set(target_modules)
        found = [
            (name, mod)
            for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in targets
        ]
        if not found:
            raise ValueError(f"S2-LoRA: no nn.Linear named one of {sorted(targets)} in the model")
        for p in model.parameters():
            p.requires_grad_(False)
        device = found[0][1].weight.device
        self.factors = SharedFactors([(m.out_features, m.in_features) for _, m in found], self.r, device=device)
        # registered once, on the model, so that model.to(device) moves the shared factors too
        # (each layer only refers to them); removed again by merge()
        model.add_module(FACTORS_NAME, self.factors)
        self.layers: dict[str, S2LoRALinear] = {}
        scale = self.alpha / self.r
        for name, mod in found:
            wrapped = S2LoRALinear(mod, self.factors, scale, dropout)
            _set_submodule(model, name, wrapped)
            self.layers[name] = wrapped

    def named_trainable(self) -> dict[str, nn.Parameter]:
        """Shared factors as ``s2lora.A.{out}x{in}`` / ``s2lora.B...``, coefficients as ``{layer}.coef``."""
        out = {}
        for key in self.factors.A:
            out[f"s2lora.A.{key}"] = self.factors.A[key]
            out[f"s2lora.B.{key}"] = self.factors.B[key]
        for name, layer in self.layers.items():
            out[f"{name}.coef"] = layer.coef
        return out

    def l1_penalty(self) -> torch.Tensor:
        """sum_m ||c_m||_1."""
        return torch.stack([layer.coef.abs().sum() for layer in self.layers.values()]).sum()

    @torch.no_grad()
    def prune(self, threshold: float) -> dict:
        """Zero coefficients with |c| < threshold * max |c| (over all layers); counts and sparsity."""
        largest = max(float(layer.coef.abs().max()) for layer in self.layers.values())
        cut = threshold * largest
        total = nonzero = 0
        for layer in self.layers.values():
            layer.coef.masked_fill_(layer.coef.abs() < cut, 0.0)
            total += layer.coef.numel()
            nonzero += int(torch.count_nonzero(layer.coef))
        return {
            "threshold": threshold,
            "max_abs_coef": largest,
            "cut": cut,
            "coefficients": total,
            "nonzero": nonzero,
            "sparsity": 1.0 - nonzero / total,
        }

    def rank_allocation(self) -> dict[str, int]:
        """Learned rank per adapted layer = number of non-zero coefficients."""
        return {name: int(torch.count_nonzero(layer.coef)) for name, layer in self.layers.items()}

    @torch.no_grad()
    def merge(self) -> nn.Module:
        """W_m += ΔW_m for every layer; restore plain ``nn.Linear`` modules; return the model."""
        for name, layer in self.layers.items():
            base = layer.base
            base.weight += layer.delta_weight().to(base.weight.dtype)
            _set_submodule(self.model, name, base)
        self.layers = {}
        if FACTORS_NAME in self.model._modules:
            del self.model._modules[FACTORS_NAME]
        return self.model


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
