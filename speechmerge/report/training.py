"""The training table: what each fine-tuning job gained over its start model, and what it cost.

One row per fine-tuned model that has its own test sets (the experts of ``multilingual`` and
``domains``: each on its subset's test sets; the ``peft`` methods: on the in-domain test set),
with the start model's (θ₀ or zero-shot) and the fine-tuned metric (WER/CER, BLEU for translation), the change, the dev
loss of the selected step, the training time and the trainable parameters, read from the score
files (``ResultStore``) and the jobs' ``train_info.json``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from speechmerge import names as N
from speechmerge.report.render import human_count, md_escape
from speechmerge.report.scores import ResultStore

COLUMNS = (
    "job",
    "testset",
    "metric",
    "start",
    "finetuned",
    "change",
    "best_dev_loss",
    "steps",
    "train_time_s",
    "samples_per_s",
    "trainable_params",
    "trainable_pct",
)
HEADERS = (
    "Job",
    "Test set",
    "Metric",
    "Start",
    "Fine-tuned",
    "Change",
    "Dev loss",
    "Steps",
    "Train time (s)",
    "Samples/s",
    "Trainable",
    "Trainable %",
)


def start_model(spec: Mapping) -> str:
    """The model every fine-tuning job started from: θ₀ when the plan has one, else zero-shot."""
    return N.ADAPTED if any(r.get("model") == N.ADAPTED for r in spec.get("rows", [])) else N.ZEROSHOT


def training_rows(spec: Mapping, store: ResultStore, infos: Mapping[str, Mapping]) -> list[dict]:
    """Rows of the table; ``infos``: job -> its parsed ``train_info.json``."""
    rows = []
    start = start_model(spec)
    for job, testsets in (spec.get("expert_testsets") or {}).items():
        info = infos.get(job, {})
        for testset in testsets:
            metric = store.metric_for(testset)
            zs, ft = store.value(start, testset, metric), store.value(job, testset, metric)
            rows.append(
                {
                    "job": job,
                    "testset": testset,
                    "metric": metric.upper() if metric != "bleu" else "BLEU",
                    "start": zs,
                    "finetuned": ft,
                    "change": ft - zs,
                    "best_dev_loss": info.get("best_dev_loss", math.nan),
                    "steps": info.get("steps"),
                    "train_time_s": info.get("train_time_s", math.nan),
                    "samples_per_s": info.get("samples_per_s"),
                    "trainable_params": info.get("trainable_params"),
                    "trainable_pct": info.get("trainable_percent"),
                }
            )
    return rows


def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if key == "trainable_params":
        return human_count(v)
    if key in ("change",):
        return f"{v:+.1f}"
    if key in ("best_dev_loss",):
        return f"{v:.3f}"
    if key in ("samples_per_s", "trainable_pct"):
        return f"{v:.3g}"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def to_csv(rows: Sequence[Mapping]) -> str:
    lines = [",".join(COLUMNS)]
    for r in rows:
        lines.append(",".join("" if r[k] is None else str(r[k]) for k in COLUMNS))
    return "\n".join(lines) + "\n"


def to_markdown(rows: Sequence[Mapping], title: str) -> str:
    out = [
        f"**{md_escape(title)}**",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" if k in ("job", "testset", "metric") else "---:" for k in COLUMNS) + "|",
    ]
    for r in rows:
        out.append("| " + " | ".join(md_escape(_fmt(k, r[k])) for k in COLUMNS) + " |")
    out += [
        "",
        "Start: the model the job started from (θ₀, the context-adapted base, when the run has one; "
        "else zero-shot at the experiments' context). Change: fine-tuned minus start (negative is better for WER/CER, positive for BLEU). "
        "Dev loss: token cross entropy on the job's dev split at the selected step.",
    ]
    return "\n".join(out) + "\n"
