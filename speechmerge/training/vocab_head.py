"""The training step's vocabulary projection, computed in column blocks.

Whisper's output layer maps the selected hidden states (``n`` target positions x 512) onto the
51,865-token vocabulary with the weight it shares with the decoder's token embedding. As one
matrix product, ``hidden @ W.T`` (n x 512 by 512 x 51,865) and the weight's gradient
``G.T @ hidden`` (51,865 x n by n x 512, k = n) are the two least efficient products of the
step on CPU: their one short dimension leaves the BLAS kernel at about half the machine's
float32 GEMM rate (``benchmarks/train_bench.py --profile``). Split into blocks of
``VOCAB_BLOCK`` rows of ``W``, each block is a product the kernel runs near its peak, and the
result is written in place: the same sums, only the order of float rounding inside the kernel
could differ (on the CPU measured it does not: the trained weights are bit-identical).

The decoder's token embedding gets a sparse gradient (:func:`sparse_token_embedding`): its
backward sums the gradient of the used tokens' rows, which are then added in place to the output
layer's dense gradient of the same tensor, instead of a second dense 51,865 x 512 gradient being
built and the two added into a third.
"""

from __future__ import annotations

import torch
from torch import nn

#: Rows of the output weight per block: on the 2-core Zen 4 CPU, 4,096 and 2,048 give the
#: fastest logits (71-75 ms against 83-96 ms for 8,192 and 105 ms for one product; the output is
#: written in place with the full row stride) and the same weight gradient (61-62 against 86-91
#: ms); ``benchmarks/train_bench.py --vocab-products``.
VOCAB_BLOCK = 4096


class _BlockedProjection(torch.autograd.Function):
    """``hidden @ weight.T`` with both the product and the weight's gradient done in blocks of
    ``block`` output rows."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, block: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(hidden, weight)
        ctx.block = block
        out = hidden.new_empty(hidden.shape[0], weight.shape[0])
        for s in range(0, weight.shape[0], block):
            torch.mm(hidden, weight[s : s + block].t(), out=out[:, s : s + block])
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        hidden, weight = ctx.saved_tensors
        grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_hidden = grad_out @ weight
        if ctx.needs_input_grad[1]:
            grad_weight = weight.new_empty(weight.shape)
            for s in range(0, weight.shape[0], ctx.block):
                torch.mm(grad_out[:, s : s + ctx.block].t(), hidden, out=grad_weight[s : s + ctx.block])
        return grad_hidden, grad_weight, None


def vocab_logits(hidden: torch.Tensor, proj_out: nn.Module, block: int = VOCAB_BLOCK) -> torch.Tensor:
    """Logits of ``hidden`` (positions x d_model) under Whisper's output layer ``proj_out``.

    The blocked product is used for a plain bias-free ``nn.Linear`` in float32 outside autocast;
    anything else (a PEFT-wrapped layer, autocast, other dtypes) calls the module itself."""
    if (
        type(proj_out) is nn.Linear
        and proj_out.bias is None
        and hidden.dim() == 2
        and hidden.dtype == proj_out.weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and hidden.device.type == "cpu"
    ):
        return _BlockedProjection.apply(hidden, proj_out.weight, block)
    return proj_out(hidden)


class _RowSumEmbedding(torch.autograd.Function):
    """``weight[ids]`` whose weight gradient is sparse: one row per distinct token, the sum of its
    positions' gradients in position order, as the dense backward adds them. Added to a dense
    gradient of the same tensor, it gives what the dense path gives bit for bit.

    With a ``pending`` list (set up by :func:`sparse_token_embedding`) and no gradient on the
    weight yet, the rows are not handed to autograd: autograd would add a sparse gradient to the
    output layer's dense one out of place, copying all 51,865 x 512 entries. They are queued
    instead and added in place by the weight's post-accumulate hook, once the dense gradient has
    become ``weight.grad``."""

    @staticmethod
    def forward(ctx, ids, weight, padding_idx, pending):  # type: ignore[override]
        ctx.save_for_backward(ids)
        ctx.weight = weight
        ctx.padding_idx = padding_idx
        ctx.pending = pending
        return weight[ids]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (ids,) = ctx.saved_tensors
        flat = ids.reshape(-1)
        rows = grad_out.reshape(flat.numel(), -1)
        if ctx.padding_idx is not None:
            keep = flat != ctx.padding_idx
            flat, rows = flat[keep], rows[keep]
        tokens, where = torch.unique(flat, sorted=True, return_inverse=True)
        sums = rows.new_zeros(tokens.numel(), rows.shape[1]).index_add_(0, where, rows)
        if ctx.pending is not None and ctx.weight.grad is None:
            ctx.pending.append((tokens, sums))
            return None, None, None, None
        grad = torch.sparse_coo_tensor(
            tokens.unsqueeze(0), sums, ctx.weight.shape, is_coalesced=True, check_invariants=False
        )
        return None, grad, None, None


class RowSumEmbedding(nn.Embedding):
    """An ``nn.Embedding`` whose weight gradient is :class:`_RowSumEmbedding`'s sparse one.

    After :meth:`add_rows_in_place` the rows are added in place to the weight's gradient instead,
    once autograd has set it (a zero gradient is made first if nothing else reached the weight)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.max_norm is not None or self.scale_grad_by_freq or not torch.is_grad_enabled():
            return super().forward(input)
        pending = self.__dict__.get("_pending_rows")
        if self.__dict__.get("_hooked_weight") != id(self.weight):
            pending = None  # a copy of the module, or a new weight: the hook is not on this tensor
        elif pending:  # left by a backward pass that was interrupted
            pending.clear()
        return _RowSumEmbedding.apply(input, self.weight, self.padding_idx, pending)

    def add_rows_in_place(self) -> None:
        """Queue the rows in backward and add them to ``weight.grad`` in place after it is set."""
        if "_pending_rows" in self.__dict__:
            return
        self.__dict__["_pending_rows"] = pending = []

        def add_pending(weight: torch.Tensor) -> None:
            if pending and weight.grad is None:  # no other gradient reached the weight
                weight.grad = torch.zeros_like(weight)
            for tokens, sums in pending:
                weight.grad.index_add_(0, tokens, sums)
            pending.clear()

        self.weight.register_post_accumulate_grad_hook(add_pending)
        self.__dict__["_hooked_weight"] = id(self.weight)


def sparse_token_embedding(whisper) -> bool:
    """Give the decoder's token embedding a sparse gradient when its weight is trained and is the
    output layer's weight (Whisper ties them): the output layer's dense gradient is computed
    first in the backward pass, and each used token's summed row is then added to it in place,
    instead of a second dense 51,865 x 512 gradient being built and added. The result equals the
    dense path's bit for bit (tests/test_vocab_head.py). Returns whether it did.

    Nothing changes when the embedding is frozen (PEFT methods) or untied."""
    emb = whisper.model.decoder.embed_tokens
    proj = getattr(whisper, "proj_out", None)
    if type(emb) is not nn.Embedding or not emb.weight.requires_grad:
        return False
    if proj is None or getattr(proj, "weight", None) is not emb.weight:
        return False
    emb.__class__ = RowSumEmbedding
    emb.add_rows_in_place()
    return True
