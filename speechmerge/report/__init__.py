"""Per-experiment report: tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) in one directory.

``write_report(spec, out_dir, scores=..., hyps=..., ...)`` is what the ``report`` rule calls. The
directory is written atomically and holds ``table.{csv,md,tex}``, the extra tables of the
experiment kind, ``training.{csv,md}`` (each fine-tuned model against zero-shot, with its dev
loss, training time and trainable parameters), ``significance.csv``, figures, ``README.md``
(every file with its caption) and ``summary.json`` (the same listing plus every table's numbers).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechmerge.report import tables as T
from speechmerge.report import training as TR

log = logging.getLogger(__name__)

__all__ = ["write_report", "build_tables"]

DEFAULT_BETA = 0.3  # BoostedTSV-M's best β in the paper, used if no merge info gives one


def _read_json(path) -> Any:
    return json.loads(Path(path).read_text())


def _train_infos(paths: Sequence[str | os.PathLike]) -> dict[str, tuple[str, dict]]:
    """job -> (path, train_info) of every ``train_info.json``."""
    out = {}
    for p in paths:
        info = _read_json(p)
        out[info.get("job") or Path(p).parent.name] = (str(p), info)
    return out


def _train_params(infos: Mapping[str, tuple[str, dict]]) -> dict[str, dict]:
    out = {}
    for job, (p, info) in infos.items():
        if "trainable_params" not in info or "total_params" not in info:
            raise KeyError(f"{p}: train_info lacks trainable_params / total_params")
        pct = info.get("trainable_percent", 100.0 * info["trainable_params"] / info["total_params"])
        out[job] = {"trainable_params": info["trainable_params"], "total_params": info["total_params"],
                    "trainable_percent": pct}
    return out


def _rank_allocations(paths: Sequence[str | os.PathLike], labels: Mapping[str, str]) -> dict[str, dict]:
    out = {}
    for p in paths:
        data = _read_json(p)
        if isinstance(data, dict) and isinstance(data.get("ranks"), dict):
            data = data["ranks"]
        job = Path(p).parent.name
        out[labels.get(job, job)] = {k: int(v) for k, v in (data or {}).items()}
    return out


def default_merges(merge_infos: Sequence[str | os.PathLike]) -> dict[str, dict]:
    """method -> hyperparameters of its default merge (variant == method, not a sweep point), as
    applied: N-dependent defaults such as LoRS' scaling = 1/N resolved by the method
    (``MergeMethod.resolved_hparams``), or as recorded if the method cannot be built."""
    out: dict[str, dict] = {}
    for path in merge_infos:
        try:
            info = _read_json(path)
        except (OSError, json.JSONDecodeError):
            continue
        if info.get("variant") != info.get("method"):
            continue
        hp = dict(info.get("hparams") or {})
        try:
            from speechmerge.merging import get_method

            hp = get_method(str(info["method"]), hp).resolved_hparams(len(info.get("experts") or []) or 1)
        except Exception:  # unknown method or hyperparameters: keep what the info says
            pass
        out[str(info.get("method"))] = hp
    return out


def _boost_params(defaults: Mapping[str, dict]) -> tuple[float, str]:
    """(β, energy) of the default BoostedTSV-M merge (``default_merges``), else the method's
    defaults, else (0.3, "kept")."""
    hp = defaults.get("boosted_tsv_m")
    if hp is None:
        try:
            from speechmerge.merging import get_method

            hp = dict(get_method("boosted_tsv_m", {}).hparams)
        except Exception:  # registry not importable: the paper's best value
            hp = {}
    return float(hp.get("beta", DEFAULT_BETA)), str(hp.get("energy", "kept"))


def add_default_points(spec: Mapping, defaults: Mapping[str, dict]) -> dict:
    """``spec`` with each sweep extended by the default merge of its method, at the value of the
    swept hyperparameter that merge used (``defaults`` from ``default_merges``), so that a sweep
    of β over 0.1 and 0.5 is drawn and tabled through the default 0.3. Points already present are
    kept as they are; without the default row or its merge info the sweep is unchanged."""
    rows = {r.get("model") for r in spec.get("rows", [])}
    sweeps = []
    for sw in spec.get("sweeps", []):
        value = defaults.get(sw["method"], {}).get(sw["param"])
        model = f"merge-{sw['method']}"
        points = list(sw["points"])
        if model in rows and isinstance(value, (int, float)) and \
                all(float(p["value"]) != float(value) for p in points):
            points.append({"value": value, "model": model, "default": True})
            points.sort(key=lambda p: float(p["value"]))
        sweeps.append({**sw, "points": points})
    return {**spec, "sweeps": sweeps}


def build_tables(spec: Mapping, store: T.ResultStore, *, params: Mapping | None = None) -> dict[str, T.Table]:
    tables = {"table": T.build_main_table(spec, store, params=params)}
    if spec["kind"] == "domains":
        tables["per_testset"] = T.build_per_testset_table(spec, store)
    for t in T.build_sweep_tables(spec, store):
        tables[t.name] = t
    fg = T.build_forgetting_table(spec, store) if spec["kind"] in ("multilingual", "domains") else None
    if fg is not None:
        tables["forgetting"] = fg
    return tables


def report_captions(spec: Mapping) -> dict[str, str]:
    """Caption of every figure (``.png``) and main table (``.csv``) the report of ``spec`` can
    hold, by file name: the captions ``snakemake --report`` shows (rules/report.smk) and those of
    the figures in the report's README."""
    exp, kind = spec["experiment"], spec["kind"]
    metric = {"multilingual": "WER (ASR) and BLEU (X→en ST)", "domains": "WER", "peft": "CER"}[kind]
    caps = {
        "table.csv": f"{exp}: the paper's main table — {metric} per test set and method, averages"
                     + (", normalised performance" if spec.get("normalise_to") else "")
                     + (", trainable parameters" if kind == "peft" else "")
                     + "; 95 % bootstrap intervals and paired-bootstrap p-values against "
                     f"{spec.get('baseline_for_significance')} in the extra columns.",
        "training.csv": f"{exp}: each fine-tuned model on its own test sets against zero-shot, with the dev "
                        "loss of the selected step, training time and trainable parameters.",
        "significance.csv": f"{exp}: paired bootstrap tests of every cell against "
                            f"{spec.get('baseline_for_significance')} (and matched-pairs p for error rates).",
        "methods.png": f"{exp}: every method on the summary columns, with 95 % bootstrap intervals.",
        "taskvector_cosine.png": f"{exp}: cosine similarity between the experts' task vectors (all weights).",
        "taskvector_spectra.png": f"{exp}: singular-value spectra of representative task-vector matrices"
                                  + (", with what BoostedTSV-M's boosting makes of them"
                                     if any(r.get("method") == "boosted_tsv_m" for r in spec["rows"]) else "")
                                  + ".",
    }
    if kind == "domains":
        caps["per_testset.csv"] = f"{exp}: WER of every method on every test set."
    if spec.get("sequential"):
        caps["forgetting.csv"] = f"{exp}: error rate per subset after each stage of sequential fine-tuning."
        caps["forgetting.png"] = f"{exp}: forgetting — error rate per subset after each sequential fine-tuning stage."
    for sw in spec.get("sweeps", []):
        name, param = f"sweep_{sw['method']}_{sw['param']}", sw["param"]
        caps[f"{name}.csv"] = f"{exp}: {sw['method']} with {param} swept over {[p['value'] for p in sw['points']]}."
        caps[f"{name}.png"] = (f"{exp}: {sw['method']} against {param} (95 % bands); dashed lines: the baseline "
                               "and the method at its default.")
    if kind == "peft":
        caps["rank_allocation.png"] = (f"{exp}: learned rank per adapted module (module type × layer) — "
                                       "AdaLoRA's final ranks and S2-LoRA's non-zero coefficients.")
    return caps


def _summary_columns(table: T.Table) -> list[str]:
    means = [c.key for c in table.columns if c.kind == "mean" and c.show]
    keys = means or [c.key for c in table.columns if c.kind == "base" and c.show]
    return keys + [c.key for c in table.columns if c.kind == "params_pct"]


def write_report(
    spec: Mapping,
    out_dir: str | os.PathLike,
    *,
    scores: Sequence[str | os.PathLike],
    hyps: Sequence[str | os.PathLike] = (),
    train_infos: Sequence[str | os.PathLike] = (),
    rank_allocations: Sequence[str | os.PathLike] = (),
    taskvectors: Sequence[str | os.PathLike] = (),
    merge_infos: Sequence[str | os.PathLike] = (),
    n_boot: int = 1000,
    seed: int = 0,
    verify: bool = True,
) -> dict:
    """Write the whole report directory atomically; return the summary dict.

    First (``verify``) every score is checked against its hypotheses
    (``speechmerge.report.verify``): a mismatch stops the report before any table is written.
    """
    from speechmerge.report import figures as F
    from speechmerge.report.verify import verify_results
    from speechmerge.utils import atomic_path, provenance

    if verify:
        verify_results(scores, hyps)
    exp = spec["experiment"]
    defaults = default_merges(merge_infos)
    spec = add_default_points(spec, defaults)
    store = T.ResultStore(T.load_scores(scores), T.load_hyps(hyps), n_boot=n_boot, seed=seed,
                          metric_override="cer" if spec["kind"] == "peft" else None)
    infos = _train_infos(train_infos)
    params = _train_params(infos) if spec["kind"] == "peft" else None
    tables = build_tables(spec, store, params=params)
    files: list[dict] = []
    caps = report_captions(spec)

    with atomic_path(out_dir, is_dir=True) as tmp:
        def add(name: str, caption: str, kind: str):
            files.append({"file": name, "caption": caption, "kind": kind})

        for name, t in tables.items():
            (tmp / f"{name}.csv").write_text(T.to_csv(t))
            (tmp / f"{name}.md").write_text(T.to_markdown(t))
            (tmp / f"{name}.tex").write_text(T.to_latex(t, label=f"{exp}-{name}"))
            for ext in ("csv", "md", "tex"):
                add(f"{name}.{ext}", t.title + (" (all columns, 95 % CIs, p-values)" if ext == "csv" else ""), "table")
        training_rows = TR.training_rows(spec, store, {job: info for job, (_, info) in infos.items()})
        if training_rows:
            title = f"{exp}: each fine-tuned model on its own test sets, against zero-shot"
            (tmp / "training.csv").write_text(TR.to_csv(training_rows))
            (tmp / "training.md").write_text(TR.to_markdown(training_rows, title))
            for ext in ("csv", "md"):
                add(f"training.{ext}", caps["training.csv"], "table")
        (tmp / "significance.csv").write_text(T.significance_csv(list(tables.values())))
        add("significance.csv", caps["significance.csv"], "table")

        main = tables["table"]
        figs = F.method_bars(main, _summary_columns(main), tmp / "methods",
                             title=f"{exp}: methods compared")
        add("methods.png", caps["methods.png"], "figure")
        for name, t in tables.items():
            if not name.startswith("sweep_"):
                continue
            sw = next(s for s in spec["sweeps"] if name == f"sweep_{s['method']}_{s['param']}")
            refs = {}
            for ref_model in (spec.get("baseline_for_significance"),):
                if ref_model:
                    row = next((r for r in main.rows if r.model == ref_model), None)
                    if row:
                        refs[row.label] = {k: c.value for k, c in row.cells.items()}
            default = next((r for r in main.rows if r.spec.get("method") == sw["method"]), None)
            if default and not any(p.get("default") for p in sw["points"]):
                refs[f"{default.label} (default)"] = {k: c.value for k, c in default.cells.items()}
            keys = [c.key for c in t.columns if c.show and c.kind in ("mean", "np")]
            F.sweep_plot(t, [p["value"] for p in sw["points"]], sw["param"], keys, tmp / name,
                         references=refs, title=t.title,
                         method_label=default.label if default else sw.get("label", sw["method"]))
            add(f"{name}.png", caps[f"{name}.png"], "figure")
        if "forgetting" in tables:
            F.forgetting_plot(tables["forgetting"], tmp / "forgetting", title=f"{exp}: forgetting in sequential training")
            add("forgetting.png", caps["forgetting.png"], "figure")

        experts = spec.get("experts") or {}
        tv_by_job = {Path(p).stem: p for p in taskvectors}
        tv = [(subset, tv_by_job[job]) for subset, job in experts.items() if job in tv_by_job]
        if len(tv) >= 2:
            labels, paths = [s for s, _ in tv], [p for _, p in tv]
            _, cos = F.cosine_heatmap(paths, labels, tmp / "taskvector_cosine",
                                      title=f"{exp}: cosine similarity of expert task vectors")
            add("taskvector_cosine.png", caps["taskvector_cosine.png"], "figure")
            beta, energy = _boost_params(defaults) if any(
                r.get("method") == "boosted_tsv_m" for r in spec["rows"]) else (None, "kept")
            F.spectra_plot(paths, labels, tmp / "taskvector_spectra", beta=beta, energy=energy,
                           title=f"{exp}: singular values of task-vector matrices")
            add("taskvector_spectra.png", caps["taskvector_spectra.png"] + (f" β = {beta:g}." if beta else ""),
                "figure")

        if rank_allocations:
            labels = {r["model"]: r.get("label", r["model"]) for r in spec["rows"]}
            allocs = _rank_allocations(rank_allocations, labels)
            if any(allocs.values()):
                F.rank_heatmap(allocs, tmp / "rank_allocation", title=f"{exp}: learned rank per module")
                add("rank_allocation.png", caps["rank_allocation.png"], "figure")

        for f in list(files):
            if f["file"].endswith(".png"):
                files.append({**f, "file": f["file"][:-4] + ".pdf"})
        summary = {
            "experiment": exp, "kind": spec["kind"], "files": files,
            "missing": sorted(set(store.missing)),
            "tables": {name: T.table_json(t) for name, t in tables.items()},
            "training": training_rows,
            "bootstrap": {"n_boot": n_boot, "seed": seed},
            "provenance": provenance(None, config_hash=spec.get("config_hash")),
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
        (tmp / "README.md").write_text(_readme(exp, tables, files, summary["missing"], training_rows))
    log.info("report %s: %d files, %d missing cells", out_dir, len(files) + 2, len(summary["missing"]))
    return summary


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _readme(exp: str, tables: Mapping[str, T.Table], files: Sequence[Mapping], missing: Sequence[str],
            training_rows: Sequence[Mapping] = ()) -> str:
    lines = [f"# Report: {exp}", "", T.to_markdown(tables["table"])]
    if training_rows:
        lines += ["", TR.to_markdown(training_rows, "Fine-tuned models against zero-shot")]
    lines += ["", "## Files", ""]
    for f in files:
        lines.append(f"* `{f['file']}` — {f['caption']}")
    lines += ["* `summary.json` — every table as numbers, this listing, provenance"]
    if missing:
        lines += ["", "## Missing results", ""] + [f"* {m}" for m in missing]
    return "\n".join(lines) + "\n"
