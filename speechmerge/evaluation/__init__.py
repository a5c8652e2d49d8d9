"""Evaluation: batched decoding, WER / CER / BLEU / chrF, bootstrap intervals, paired tests.

* ``evaluate_model``: one model on its test sets (``evaluate_testsets``, the ``evaluate`` rule);
* ``decode``: batched decoding and the hypothesis files; ``greedy``: the greedy decoding loop;
* ``metrics``: WER / CER / BLEU / chrF after Whisper's normalisers;
* ``stats``: bootstrap intervals and paired tests.
"""

from speechmerge.evaluation.decode import read_hypotheses, write_hypotheses
from speechmerge.evaluation.evaluate_model import evaluate_testsets, score_records

__all__ = ["evaluate_testsets", "score_records", "read_hypotheses", "write_hypotheses"]
