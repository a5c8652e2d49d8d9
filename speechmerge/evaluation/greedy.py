"""Greedy Whisper decoding over precomputed encoder states, one prompt per row.

``greedy_generate`` does what ``WhisperForConditionalGeneration.generate`` does for short-form
greedy decoding without timestamps, and gives the same tokens (``tests/test_decode.py`` compares
the two):

* each row starts from its prompt ``<|startoftranscript|> <|lang|> <|task|> <|notimestamps|>``
  (``prompt_ids``), run through the decoder in one call that fills the key/value cache;
* at every step the logits of ``generation_config.suppress_tokens`` are set to -inf, and at the
  first generated step those of ``begin_suppress_tokens`` too (HF's ``SuppressTokens*``
  processors); the next token is the argmax;
* a row that has produced end-of-text gets the pad token from then on; decoding stops when every
  row has ended (that last step, all end-of-text / pad, is dropped, as ``generate`` returns it)
  or after ``max_new_tokens`` tokens.

What it adds: the task is per row, so the transcription and the translation of the utterances of
a batch run in one loop (one pass over the decoder weights per step for both), and there is no
per-step ``generate`` machinery (logits processors, stopping criteria, cache bookkeeping), which
costs about a quarter of a decoder step for Whisper base on a CPU.
"""

from __future__ import annotations

from typing import Sequence

import torch


def prompt_ids(generation_config, language: str, task: str) -> list[int]:
    """Decoder prompt token ids for one row: start, language, task, no-timestamps."""
    gc = generation_config
    return [int(gc.decoder_start_token_id), int(gc.lang_to_id[f"<|{language}|>"]), int(gc.task_to_id[task]),
            int(gc.no_timestamps_token_id)]


def _suppress_mask(tokens: Sequence[int] | None, vocab: int) -> torch.Tensor:
    mask = torch.zeros(vocab, dtype=torch.bool)
    if tokens:
        mask[torch.tensor([int(t) for t in tokens if 0 <= int(t) < vocab], dtype=torch.long)] = True
    return mask


@torch.inference_mode()
def greedy_generate(model, encoder_states: torch.Tensor, prompts: torch.Tensor, *,
                    max_new_tokens: int) -> torch.Tensor:
    """Generated tokens ``[rows, T]`` (T <= ``max_new_tokens``; prompt not included).

    ``encoder_states``: ``[rows, positions, d_model]``; ``prompts``: ``[rows, prompt_len]`` ids.
    """
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    if encoder_states.shape[0] != prompts.shape[0]:
        raise ValueError(f"{encoder_states.shape[0]} encoder rows but {prompts.shape[0]} prompts")
    gc = model.generation_config
    eos = gc.eos_token_id
    eos = int(eos[0] if isinstance(eos, (list, tuple)) else eos)
    pad = int(gc.pad_token_id) if gc.pad_token_id is not None else eos
    vocab = int(model.proj_out.out_features)
    always = _suppress_mask(gc.suppress_tokens, vocab).to(encoder_states.device)
    first = always | _suppress_mask(gc.begin_suppress_tokens, vocab).to(encoder_states.device)
    decoder = model.get_decoder()
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    rows = prompts.shape[0]
    done = torch.zeros(rows, dtype=torch.bool, device=prompts.device)
    cur, out = prompts, []
    finished = False
    for step in range(int(max_new_tokens)):
        hidden = decoder(input_ids=cur, encoder_hidden_states=encoder_states, past_key_values=cache,
                         use_cache=True).last_hidden_state[:, -1]
        logits = model.proj_out(hidden).float().masked_fill_(first if step == 0 else always, float("-inf"))
        nxt = torch.where(done, torch.full_like(done, pad, dtype=torch.long), logits.argmax(-1))
        out.append(nxt)
        done |= nxt == eos
        if bool(done.all()):
            finished = True
            break
        cur = nxt[:, None]
    if finished:  # like generate: the step on which the last row ended holds only end-of-text / pad
        out.pop()
    return torch.stack(out, 1) if out else prompts.new_zeros((rows, 0))
