"""Check score files against their hypothesis files before any table is written.

A table is only as good as the pairing of each score with the hypotheses it came from: a score
file copied over another model's, or a hypothesis file relabelled, gives confidence intervals
that exclude their own point estimate and significance marks between the wrong systems.
``verify_results`` therefore, for every score record (model, test set):

* finds the hypotheses of that model and test set (each file holds one model, named by the
  file: ``{model}.json`` / ``{model}.jsonl``);
* checks that their utterance ids are unique, that their count is the record's ``n`` and that
  every model was scored on the same utterance ids of a test set;
* recomputes every stored metric from the hypotheses with the evaluation's own scorer
  (``speechmerge.evaluation.metrics.score_texts``, same normaliser and spelling map) and
  requires the stored value to the last digit (relative difference below 1e-9).

Any mismatch is a ``ResultMismatch`` naming the hypotheses file, the model and the test set.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from speechmerge.evaluation import metrics as M
from speechmerge.evaluation.decode import read_hypotheses, split_by_testset
from speechmerge.utils import read_json

REL_TOL = 1e-9
_SPELLING = re.compile(r"\(spelling map: (.+)\)$")


class ResultMismatch(ValueError):
    """Scores that do not follow from their hypotheses (names file, model and test set)."""


def _stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for ext in (".jsonl", ".json"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem


def _spelling_source(record: Mapping) -> str | None:
    """The English spelling map the evaluation used, if the record names a file that exists."""
    normalizer = record.get("normalizer")
    texts = normalizer.values() if isinstance(normalizer, Mapping) else [normalizer]
    for text in texts:
        m = _SPELLING.search(str(text or ""))
        if m and Path(m.group(1)).is_file():
            return m.group(1)
    return None


def _load_hyps(paths: Sequence[str | os.PathLike]) -> dict[tuple[str, str], tuple[str, list[dict]]]:
    out: dict[tuple[str, str], tuple[str, list[dict]]] = {}
    for p in paths:
        recs = read_hypotheses(p)
        model = recs[0]["model"]
        if model != _stem(p):
            raise ResultMismatch(f"{p}: hypotheses of model {model!r} in the file named for model {_stem(p)!r}")
        for testset, group in split_by_testset(recs, default=_stem(p)).items():
            if (model, testset) in out:
                raise ResultMismatch(
                    f"{p}: hypotheses of model {model!r} on {testset!r} also in {out[(model, testset)][0]}"
                )
            out[(model, testset)] = (str(p), group)
    return out


def verify_results(scores: Sequence[str | os.PathLike], hyps: Sequence[str | os.PathLike]) -> int:
    """Raise ``ResultMismatch`` unless every score record follows from its hypotheses.

    Returns the number of (model, test set) records checked.
    """
    from speechmerge.report.scores import flatten_scores

    by_key = _load_hyps(hyps)
    ids_of: dict[str, tuple[str, str, set]] = {}  # testset -> (model, file, ids)
    checked = 0
    for path in scores:
        for rec in flatten_scores(read_json(path), where=str(path)):
            model, testset = rec["model"], rec["testset"]
            where = f"model {model!r}, test set {testset!r}"
            if model != _stem(path):
                raise ResultMismatch(f"{path}: scores of {where} in the file named for model {_stem(path)!r}")
            if (model, testset) not in by_key:
                raise ResultMismatch(f"{path}: no hypotheses for {where} among the hypothesis files")
            hyp_path, group = by_key[(model, testset)]
            ids = [str(r["id"]) for r in group]
            if len(set(ids)) != len(ids):
                dup = next(i for i in ids if ids.count(i) > 1)
                raise ResultMismatch(f"{hyp_path}: {where}: utterance id {dup!r} appears twice")
            if rec.get("n") is not None and int(rec["n"]) != len(ids):
                raise ResultMismatch(
                    f"{hyp_path}: {where}: {len(ids)} hypotheses, the scores in {path} say n={rec['n']}"
                )
            first = ids_of.setdefault(testset, (model, hyp_path, set(ids)))
            if first[2] != set(ids):
                extra = sorted(set(ids) - first[2])[:3] or sorted(first[2] - set(ids))[:3]
                raise ResultMismatch(
                    f"{hyp_path}: {where}: utterance ids differ from those of model {first[0]!r} "
                    f"({first[1]}), e.g. {extra}"
                )
            tasks = {r["task"] for r in group}
            task = rec.get("task") or (tasks.pop() if len(tasks) == 1 else None)
            if task is None or tasks - {task}:
                raise ResultMismatch(f"{hyp_path}: {where}: hypotheses of task(s) {sorted(tasks)}, scores of {task!r}")
            again = M.score_texts(
                [r["reference"] for r in group],
                [r["hypothesis"] for r in group],
                task=task,
                language=[r["language"] for r in group],
                ids=ids,
                spelling_source=_spelling_source(rec),
            )["metrics"]
            for metric, stored in rec["metrics"].items():
                if metric not in again or stored is None:
                    continue
                value = float(again[metric])
                if not math.isclose(float(stored), value, rel_tol=REL_TOL, abs_tol=1e-12):
                    raise ResultMismatch(
                        f"{hyp_path}: {where}: {metric} recomputed from the hypotheses is {value!r}, "
                        f"{path} says {stored!r}; the scores do not belong to these hypotheses"
                    )
            checked += 1
    return checked


def check_contexts(spec: Mapping, scores: Sequence[str | os.PathLike]) -> None:
    """Raise ``ResultMismatch`` when a model was decoded at another encoder context than its row
    says (a base folder imported elsewhere, uncropped, and taken as the cropped one): every
    model is at the experiments' context (``spec["context_s"]``) but rows that name their own
    (the 30 s zero-shot row)."""
    from speechmerge.report.scores import flatten_scores

    default = spec.get("context_s")
    own: dict[str, float] = {}
    for row in spec.get("rows", []):
        if row.get("context_s") is not None:
            for model in [row["model"], *(v for v in (row.get("seeds") or {}).values() if isinstance(v, str))]:
                own[model] = float(row["context_s"])
    for path in scores:
        for rec in flatten_scores(read_json(path), where=str(path)):
            got = (rec.get("decoding") or {}).get("context_seconds")
            want = own.get(rec["model"], default)
            if got is None or want is None or math.isclose(float(got), float(want), abs_tol=1e-6):
                continue
            raise ResultMismatch(
                f"{path}: model {rec['model']!r} was decoded at a {float(got):g} s encoder context on "
                f"{rec['testset']!r}, but its row is at {float(want):g} s: the model it was decoded from was not "
                "made with this config's audio.max_seconds (rebuild it: snakemake --forcerun the job that made it)"
            )


__all__ = ["ResultMismatch", "check_contexts", "verify_results"]
