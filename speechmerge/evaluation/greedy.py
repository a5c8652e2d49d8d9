"""Greedy Whisper decoding over precomputed encoder states, one prompt per row, with rows that
have ended dropped from the batch.

``greedy_generate`` gives the tokens ``WhisperForConditionalGeneration.generate`` gives for
short-form greedy decoding without timestamps (``tests/test_decode.py`` compares the two, and
``benchmarks/decode_bench.py --compare-generate`` does on Whisper base):

* each row starts from its prompt ``<|startoftranscript|> <|lang|> <|task|> <|notimestamps|>``
  (``prompt_ids``), run through the decoder in one call that fills the key/value cache;
* at every step the logits of ``generation_config.suppress_tokens`` are set to -inf, and at the
  first generated step those of ``begin_suppress_tokens`` too (HF's ``SuppressTokens*``
  processors); the next token is the argmax;
* a row that has produced end-of-text is padded with the pad token from then on; decoding stops
  when every row has ended (that last step is dropped from the output, as ``generate`` does) or
  after ``max_new_tokens`` tokens.

What it adds over ``generate``:

* **Compaction.** ``generate`` runs every row until the longest one ends, so one runaway
  hypothesis keeps the whole batch in the decoder. Here, once at most ``compact`` (3/4) of the
  rows still run, the ended rows are removed from the key/value caches and the encoder states
  (``Cache.reorder_cache``), so a step costs what its running rows cost. Shrinking by a fixed
  fraction bounds the copying to a few times the cache size. Rows are independent in Whisper's
  decoder (no attention across the batch, the same position for every row), so this changes no
  token.
* **Tasks in one loop.** The prompt is per row, so the transcription and the translation of the
  utterances of a batch are decoded together, one pass over the decoder weights per step; with
  ``state_rows`` the cross-attention keys and values of an utterance are projected once for all
  its tasks.
"""

from __future__ import annotations

from typing import Sequence

import torch


def prompt_ids(generation_config, language: str, task: str) -> list[int]:
    """Decoder prompt token ids for one row: start, language, task, no-timestamps."""
    gc = generation_config
    return [
        int(gc.decoder_start_token_id),
        int(gc.lang_to_id[f"<|{language}|>"]),
        int(gc.task_to_id[task]),
        int(gc.no_timestamps_token_id),
    ]


#: on a GPU, tokens decoded between two checks of whether any row still runs
SYNC_EVERY = 8


def _suppress_mask(tokens: Sequence[int] | None, vocab: int, device) -> torch.Tensor:
    mask = torch.zeros(vocab, dtype=torch.bool, device=device)
    if tokens:
        mask[torch.tensor([int(t) for t in tokens if 0 <= int(t) < vocab], dtype=torch.long, device=device)] = True
    return mask


@torch.inference_mode()
def greedy_generate(
    model,
    encoder_states: torch.Tensor,
    prompts: torch.Tensor,
    *,
    max_new_tokens: int,
    compact: float | None = 0.75,
    state_rows: torch.Tensor | None = None,
    sync_every: int | None = None,
) -> torch.Tensor:
    """Generated tokens ``[rows, T]`` (T <= ``max_new_tokens``; the prompt is not included).

    ``encoder_states``: ``[rows, positions, d_model]``, or with ``state_rows`` (the utterance of
    each row) ``[utterances, positions, d_model]``: rows of one utterance (its tasks) then share
    the cross-attention keys and values, projected once. ``prompts``: ``[rows, prompt_len]`` ids.
    ``compact``: drop ended rows once the running ones are at most this fraction of the batch
    being decoded (``None``: never, the batch runs whole as in ``generate``). ``sync_every``: how
    often the host checks for ended rows (None: every token on the CPU, ``SYNC_EVERY`` on a GPU;
    the tokens are the same).
    """
    rows = prompts.shape[0]
    own_cache = hasattr(model, "new_cache")  # speechmerge.models.inference.WhisperDecoderModel
    if state_rows is not None:
        if state_rows.shape[0] != rows:
            raise ValueError(f"{state_rows.shape[0]} state rows but {rows} prompts")
        if not own_cache:  # transformers' decoder: one row of encoder states per decoding row
            encoder_states, state_rows = encoder_states.index_select(0, state_rows), None
    elif encoder_states.shape[0] != rows:
        raise ValueError(f"{encoder_states.shape[0]} encoder rows but {rows} prompts")
    if compact is not None and not 0 < compact < 1:
        raise ValueError(f"compact must be in (0, 1) or None, got {compact}")
    device = encoder_states.device
    gc = model.generation_config
    eos = gc.eos_token_id
    eos = int(eos[0] if isinstance(eos, (list, tuple)) else eos)
    pad = int(gc.pad_token_id) if gc.pad_token_id is not None else eos
    vocab = int(model.proj_out.out_features)
    always = _suppress_mask(gc.suppress_tokens, vocab, device)
    first = always | _suppress_mask(gc.begin_suppress_tokens, vocab, device)
    decoder = model.get_decoder()
    if own_cache:
        cache = model.new_cache()
        if state_rows is not None:
            cache.fill_cross(decoder, encoder_states, state_rows)
    else:
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    out = torch.full((rows, int(max_new_tokens)), pad, dtype=torch.long, device=device)
    row_of = torch.arange(rows, device=device)  # the output row of each row being decoded
    running = torch.ones(rows, dtype=torch.bool, device=device)
    states, cur, n_steps = encoder_states, prompts, int(max_new_tokens)
    # how often the host asks whether any row still runs: every token on the CPU (free there);
    # every SYNC_EVERY tokens on a GPU, so the GPU is not waited for token by token (rows that
    # ended meanwhile only produce padding, and the steps after the last end are cut off)
    every = int(sync_every) if sync_every else (1 if device.type == "cpu" else SYNC_EVERY)
    alive = torch.zeros((), dtype=torch.long, device=device)  # steps after which a row still ran
    for step in range(int(max_new_tokens)):
        hidden = decoder(
            input_ids=cur, encoder_hidden_states=states, past_key_values=cache, use_cache=True
        ).last_hidden_state[:, -1]
        logits = model.proj_out(hidden).float().masked_fill_(first if step == 0 else always, float("-inf"))
        nxt = torch.where(running, logits.argmax(-1), torch.full_like(row_of, pad))
        out[row_of, step] = nxt
        running &= nxt != eos
        if every > 1:
            alive += running.any().long()
            if (step + 1) % every and step + 1 < int(max_new_tokens):
                cur = nxt[:, None]
                continue
        n_running = int(running.sum())
        if n_running == 0:
            # like generate: the step on which the last row ended is not returned
            n_steps = step if every == 1 else int(alive)
            break
        if compact is not None and n_running <= compact * running.numel():
            keep = running.nonzero().squeeze(1)
            cache.reorder_cache(keep)
            row_of, running, nxt = row_of[keep], running[keep], nxt[keep]
            if state_rows is None:  # else the cache holds every row's cross-attention keys and values
                states = states[keep]
        cur = nxt[:, None]
    return out[:, :n_steps]
