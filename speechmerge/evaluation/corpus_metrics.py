"""The corpus-level metrics, one record each: name, label, direction, whether it is an error rate,
and its per-utterance sufficient statistics with the function that turns their sums into the
corpus score. Scoring (``evaluation.stats``), the bootstrap, dev selection, tables and figures all
read a metric's direction and label from here.

* ``wer`` / ``cer``: (edits_i, ref_len_i) -> 100 · Σ edits / Σ ref_len, after Whisper's
  normalisers (words; characters for CER);
* ``bleu`` / ``chrf``: sacrebleu's per-segment statistics -> the corpus score of their sums.

``accuracy(metric, value)`` is what normalised performance averages: 100 − x for an error rate
(at least 0), the score itself otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class CorpusMetric:
    name: str
    label: str
    higher_is_better: bool
    error_rate: bool  # a percentage of errors (WER, CER): NP uses 100 − x
    what: str

    def sufficient_stats(
        self, records: Sequence[Mapping], *, spelling_source=None
    ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """([n, k] per-utterance statistics, summed stats [B, k] -> corpus scores [B]) of
        hypothesis records (dicts with id, language, reference, hypothesis)."""
        from speechmerge.evaluation import metrics as M

        ids = [str(r["id"]) for r in records]
        refs = [r["reference"] for r in records]
        hyps = [r["hypothesis"] for r in records]
        if self.error_rate:
            langs = [r["language"] for r in records]
            unit = "word" if self.name == "wer" else "char"
            c = M.error_counts(refs, hyps, langs, unit=unit, ids=ids, spelling_source=spelling_source)
            return np.stack([c.edits, c.ref_len], axis=1), _ratio
        scorer = M.bleu_metric("en") if self.name == "bleu" else M.chrf_metric()
        return M.sentence_stats(scorer, refs, hyps, ids=ids), _sacrebleu(scorer)


def _ratio(sums: np.ndarray) -> np.ndarray:
    return 100.0 * sums[:, 0] / np.maximum(sums[:, 1], 1e-12)


def _sacrebleu(scorer) -> Callable[[np.ndarray], np.ndarray]:
    from speechmerge.evaluation import metrics as M

    def fn(sums: np.ndarray) -> np.ndarray:
        return np.asarray([M.score_from_stats(scorer, np.rint(row).astype(np.int64)) for row in sums])

    return fn


METRICS: dict[str, CorpusMetric] = {
    m.name: m
    for m in (
        CorpusMetric("wer", "WER", False, True, "word error rate (%)"),
        CorpusMetric("cer", "CER", False, True, "character error rate (%)"),
        CorpusMetric("bleu", "BLEU", True, False, "sacrebleu corpus BLEU"),
        CorpusMetric("chrf", "chrF", True, False, "sacrebleu corpus chrF"),
    )
}
ERROR_METRICS = tuple(name for name, m in METRICS.items() if m.error_rate)


def get_metric(name: str) -> CorpusMetric:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    return METRICS[name]


def accuracy(metric: str, value: float) -> float:
    """What NP averages: max(0, 100 − x) for an error rate, the score itself otherwise."""
    return max(0.0, 100.0 - value) if get_metric(metric).error_rate else value
