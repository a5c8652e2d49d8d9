"""The score store: score JSONs and hypothesis JSONLs, indexed by (model, test set).

``ResultStore`` answers what a table cell needs: the value of a metric (missing cells are
recorded, not fatal), the corpus statistics of a model's hypotheses for bootstrap intervals and
paired tests (cached), and which metric a test set is shown in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from speechmerge import names as N
from speechmerge.evaluation import metrics as M
from speechmerge.evaluation import stats as S
from speechmerge.utils import read_json


def flatten_scores(doc: Mapping, where: str = "scores") -> list[dict]:
    """One score file -> score records (a single record, or ``{"results": [records]}``)."""
    if "results" in doc:
        recs = [dict(r) for r in doc["results"]]
    else:
        recs = [dict(doc)]
    for r in recs:
        for key in ("model", "testset", "metrics"):
            if key not in r:
                raise ValueError(f"{where}: score record lacks {key!r}")
    return recs


def load_scores(paths: Iterable[str | Path]) -> list[dict]:
    out = []
    for p in paths:
        out += flatten_scores(read_json(p), where=str(p))
    return out


def load_hyps(paths: Iterable[str | Path]) -> dict[tuple[str, str], list[dict]]:
    """Hypothesis files -> {(model, testset): records}; records without a ``testset`` field take
    the file's stem as test set."""
    from speechmerge.evaluation.decode import read_hypotheses, split_by_testset

    out: dict[tuple[str, str], list[dict]] = {}
    for p in paths:
        recs = read_hypotheses(p)
        model = recs[0]["model"]
        for testset, group in split_by_testset(recs, default=Path(p).stem).items():
            if (model, testset) in out:
                raise ValueError(f"{p}: hypotheses of model {model!r} on {testset!r} appear in two files")
            out[(model, testset)] = group
    return out


class ResultStore:
    """Score records and hypotheses indexed by (model, testset); corpus statistics cached."""

    def __init__(
        self,
        score_records: Sequence[Mapping],
        hyps: Mapping[tuple[str, str], list[dict]] | None = None,
        *,
        n_boot: int = 1000,
        seed: int = 0,
        metric_override: str | None = None,
    ):
        self.scores: dict[tuple[str, str], dict] = {}
        for r in score_records:
            key = (r["model"], r["testset"])
            if key in self.scores and self.scores[key]["metrics"] != r["metrics"]:
                raise ValueError(f"two different score records for model {key[0]!r} on {key[1]!r}")
            self.scores[key] = dict(r)
        self.hyps = dict(hyps or {})
        self.n_boot, self.seed = n_boot, seed
        self.metric_override = metric_override
        self._stats: dict[tuple[str, str, str], S.CorpusStats] = {}
        self.missing: list[str] = []

    def metric_for(self, testset: str) -> str:
        """The metric a table shows for a test set: BLEU for translation, else the error rate."""
        task = N.testset_task(testset)
        if task == "translate":
            return "bleu"
        if self.metric_override:
            return self.metric_override
        for (m, t), r in self.scores.items():
            if t == testset:
                lang = r.get("language")
                if r.get("primary_metric") in ("wer", "cer"):
                    return r["primary_metric"]
                if isinstance(lang, str):
                    return M.primary_error_metric(lang)
        return "wer"

    def value(self, model: str | None, testset: str, metric: str) -> float:
        rec = self.scores.get((model, testset)) if model else None
        if rec is None:
            if model:
                self.missing.append(f"{model} on {testset}")
            return math.nan
        if metric not in rec["metrics"]:
            raise KeyError(
                f"scores of model {model!r} on {testset!r} have no {metric!r} (have {sorted(rec['metrics'])})"
            )
        return float(rec["metrics"][metric])

    def corpus_stats(self, model: str | None, testset: str, metric: str) -> S.CorpusStats | None:
        if not model or (model, testset) not in self.hyps:
            return None
        key = (model, testset, metric)
        if key not in self._stats:
            self._stats[key] = S.corpus_stats(self.hyps[(model, testset)], metric)
        return self._stats[key]

    def stored_ci(self, model: str | None, testset: str, metric: str):
        rec = self.scores.get((model, testset)) if model else None
        ci = (rec or {}).get("ci95", {}).get(metric)
        return tuple(ci) if ci else None
