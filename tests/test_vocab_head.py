"""The training step's vocabulary head (blocked output projection, the token embedding's row-sum
sparse gradient) against the plain modules, and the allocator switch."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from tiny_whisper import tiny_batch as batch
from tiny_whisper import tiny_whisper
from torch import nn

from speechmerge import allocator
from speechmerge.training.objective import target_loss
from speechmerge.training.peft import build_method
from speechmerge.training.vocab_head import RowSumEmbedding, sparse_token_embedding, vocab_logits


def test_blocked_projection_equals_linear_with_gradients():
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(1000, 16, generator=g)
    h0 = torch.randn(37, 16, generator=g)
    go = torch.randn(37, 1000, generator=g)
    proj = nn.Linear(16, 1000, bias=False)
    with torch.no_grad():
        proj.weight.copy_(w0)
    outs = []
    for block in (128, 300, 10**6):  # several blocks with a partial last one, and one block
        h = h0.clone().requires_grad_(True)
        proj.weight.grad = None
        y = vocab_logits(h, proj, block=block)
        y.backward(go)
        outs.append((y.detach(), h.grad, proj.weight.grad.clone()))
    h = h0.clone().requires_grad_(True)
    proj.weight.grad = None
    ref = F.linear(h, proj.weight)
    ref.backward(go)
    for y, gh, gw in outs:
        torch.testing.assert_close(y, ref.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gh, h.grad, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gw, proj.weight.grad, rtol=1e-6, atol=1e-6)
    assert not proj.weight.grad.is_sparse


def test_vocab_logits_calls_the_module_when_it_is_not_a_plain_float32_linear():
    calls = []

    class Wrapped(nn.Linear):  # stands for a PEFT-wrapped layer
        def forward(self, x):
            calls.append(1)
            return super().forward(x)

    h = torch.randn(4, 16)
    for mod in (nn.Linear(16, 50, bias=True), Wrapped(16, 50, bias=False)):
        assert torch.equal(vocab_logits(h, mod), mod(h))
    assert calls == [1, 1]  # once through vocab_logits, once directly
    lin = nn.Linear(16, 50, bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert vocab_logits(h, lin).dtype == torch.bfloat16  # autocast: the module's own path


def test_row_sum_embedding_gives_the_dense_gradient_bit_for_bit():
    """A tied weight used as an embedding (repeated ids, a padding id) and as an output layer:
    the sparse row sums added to the output layer's dense gradient equal the dense path."""
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(60, 8, generator=g)
    ids = torch.tensor([[3, 5, 3, 9, 3], [5, 5, 2, 0, 0]])
    a = torch.randn(2, 5, 8, generator=g)
    b = torch.randn(7, 60, generator=g)
    h = torch.randn(7, 8, generator=g)
    grads = []
    for cls in (nn.Embedding, RowSumEmbedding):
        emb = nn.Embedding(60, 8, padding_idx=0)
        emb.__class__ = cls
        with torch.no_grad():
            emb.weight.copy_(w0)
        loss = (emb(ids) * a).sum() + (F.linear(h, emb.weight) * b).sum()
        loss.backward()
        grads.append(emb.weight.grad)
    assert not grads[1].is_sparse
    assert torch.equal(grads[0], grads[1])
    torch.testing.assert_close(grads[1][0], (b.t() @ h)[0])  # the padding row: the output layer's part only


def test_training_model_gets_the_sparse_embedding_only_when_tied_and_trained():
    dense, fast = tiny_whisper(), tiny_whisper()
    assert sparse_token_embedding(fast) is True
    assert type(fast.model.decoder.embed_tokens) is RowSumEmbedding
    assert sparse_token_embedding(fast) is False  # already done
    b = batch()
    for m in (dense, fast):
        m.train()
        loss, correct, n = target_loss(m, b, accuracy=False)
        assert correct is None and n == int((b["labels"] != -100).sum())
        loss.backward()
    for (name, p), q in zip(dense.named_parameters(), fast.parameters()):
        if not p.requires_grad:
            continue
        assert q.grad is not None and not q.grad.is_sparse, name
        assert torch.equal(p.grad, q.grad), name
    lora = build_method("lora", tiny_whisper(), {"r": 2}, total_steps=10)
    assert sparse_token_embedding(lora.whisper) is False  # frozen embedding: nothing to do


def test_embedding_rows_are_added_in_place_and_accumulate_like_the_dense_path():
    """Two backward passes into the same gradients (gradient accumulation): the first adds the
    queued rows in place after the output layer's gradient is set, the second hands autograd a
    sparse gradient; both give the dense path's sums bit for bit, and nothing stays queued."""
    dense, fast = tiny_whisper(), tiny_whisper()
    sparse_token_embedding(fast)
    for m in (dense, fast):
        m.train()
        for seed in (0, 1):
            target_loss(m, batch(seed), accuracy=False)[0].backward()
    for (name, p), q in zip(dense.named_parameters(), fast.parameters()):
        if p.requires_grad:
            assert torch.equal(p.grad, q.grad), name
    assert fast.model.decoder.embed_tokens.__dict__["_pending_rows"] == []


def test_a_copied_model_falls_back_to_the_sparse_gradient():
    """The hook belongs to the original weight; a deep copy's weight gets the rows from autograd."""
    dense, fast = tiny_whisper(), tiny_whisper()
    sparse_token_embedding(fast)
    copy = __import__("copy").deepcopy(fast)
    for m in (dense, copy):
        m.train()
        target_loss(m, batch(), accuracy=False)[0].backward()
    for (name, p), q in zip(dense.named_parameters(), copy.parameters()):
        if p.requires_grad:
            assert torch.equal(p.grad, q.grad), name


def test_embedding_rows_reach_the_weight_when_the_output_layer_is_not_in_the_graph():
    plain, fast = tiny_whisper(), tiny_whisper()
    sparse_token_embedding(fast)
    ids = torch.tensor([[3, 4, 3, 0]])
    for m in (plain, fast):
        (m.model.decoder.embed_tokens(ids) * torch.arange(64.0).reshape(1, 4, 16)).sum().backward()
    emb = fast.model.decoder.embed_tokens
    assert torch.equal(emb.weight.grad, plain.model.decoder.embed_tokens.weight.grad)
    assert emb.__dict__["_pending_rows"] == []


def test_keep_freed_memory_respects_the_users_switches(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert allocator.keep_freed_memory() is False
    assert allocator.return_freed_memory() is False


def test_a_job_returns_freed_memory_while_it_reads_then_keeps_it(tmp_path):
    """Both switches set, in a fresh process (they are process-wide), in the order a
    fine-tuning job sets them."""
    code = "from speechmerge import allocator\nprint(allocator.return_freed_memory(), allocator.keep_freed_memory())\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert out == [expected, expected]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc switches")
def test_keep_freed_memory_makes_a_freed_block_reusable_without_page_faults():
    code = (
        "import resource, sys, torch\n"
        "from speechmerge.allocator import keep_freed_memory\n"
        "if sys.argv[1] == 'keep': assert keep_freed_memory()\n"
        "counts = []\n"
        "for _ in range(10):\n"  # a training step's pattern: the same blocks made and freed each time
        "    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    blocks = [torch.ones(n << 18) for n in (64, 40, 8, 1)]\n"  # MiB; above the mmap thresholds
        "    del blocks\n"
        "    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n"
        "print(min(counts[5:]))\n"  # once the heap has settled
    )
    faults = {}
    for mode in ("keep", "system"):
        env = {k: v for k, v in __import__("os").environ.items() if k not in allocator.USER_SWITCHES}
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, env=env, check=True)
        faults[mode] = int(out.stdout.strip())
    assert faults["system"] > 20_000  # 113 MiB of fresh 4 KiB pages each time, unmapped again
    assert faults["keep"] < 1_000, faults
