"""The encoder's hidden states made contiguous for training (speechmerge.training.layout)."""

import torch
from tiny_whisper import tiny_batch, tiny_whisper

from speechmerge.training.layout import contiguous_encoder_states
from speechmerge.training.objective import target_loss


def layer0_input_is_contiguous(model) -> list[bool]:
    seen = []
    model.model.encoder.layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    return seen


def test_encoder_states_enter_the_first_layer_contiguous_with_the_same_values_and_gradients():
    plain, fast = tiny_whisper(), tiny_whisper()
    assert contiguous_encoder_states(fast) is True
    assert contiguous_encoder_states(fast) is False  # once per model
    seen = {"plain": layer0_input_is_contiguous(plain), "fast": layer0_input_is_contiguous(fast)}
    b = tiny_batch()
    out = {}
    for name, m in (("plain", plain), ("fast", fast)):
        m.train()
        loss = target_loss(m, b, accuracy=False)[0]
        loss.backward()
        out[name] = loss.detach()
    assert seen == {"plain": [False], "fast": [True]}  # Whisper's own: a transposed view of the convolutions
    assert torch.equal(out["plain"], out["fast"])
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        if p.requires_grad:
            assert torch.equal(p.grad, q.grad), name
