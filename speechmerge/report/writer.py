"""``write_report``: one experiment's report directory, written atomically.

The directory holds ``table.{csv,md,tex}``, the extra tables of the experiment kind,
``training.{csv,md}`` (each fine-tuned model against the model it started from, with its dev loss, training time
and trainable parameters), ``claims.{csv,md}`` (the paper's claims with effect, CI, p-value and
verdict: ``speechmerge.report.claims``), ``significance.csv``, figures (PNG and PDF), ``README.md`` (every file
with its caption) and ``summary.json`` (the same listing plus every table's numbers).

The report spec comes from the plan (``speechmerge.plan``), including ``default_merges``: the
hyperparameters of each method's default merge as applied to the experiment's experts, so that a
sweep is drawn and tabled through its method's default point.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

from speechmerge import names as N
from speechmerge.report import claims as CL
from speechmerge.report import context as C
from speechmerge.report import render as R
from speechmerge.report import selection as SEL
from speechmerge.report import training as TR
from speechmerge.report.captions import report_captions
from speechmerge.report.layouts import layout
from speechmerge.report.provenance import bad_audio_note, footnote, long_utterance_note, run_provenance
from speechmerge.report.scores import ResultStore, load_hyps, load_scores
from speechmerge.report.table import Table
from speechmerge.report.tables import build_tables
from speechmerge.utils import json_default, read_json

log = logging.getLogger(__name__)


def read_train_infos(paths: Sequence[str | os.PathLike]) -> dict[str, tuple[str, dict]]:
    """job -> (path, train_info) of every ``train_info.json``."""
    out = {}
    for p in paths:
        info = read_json(p)
        out[info.get("job") or Path(p).parent.name] = (str(p), info)
    return out


def train_params(infos: Mapping[str, tuple[str, dict]]) -> dict[str, dict]:
    """job -> trainable parameters (count, total, percent) from its train_info."""
    out = {}
    for job, (p, info) in infos.items():
        if "trainable_params" not in info or "total_params" not in info:
            raise KeyError(f"{p}: train_info lacks trainable_params / total_params")
        pct = info.get("trainable_percent", 100.0 * info["trainable_params"] / info["total_params"])
        out[job] = {
            "trainable_params": info["trainable_params"],
            "total_params": info["total_params"],
            "trainable_percent": pct,
        }
    return out


def read_rank_allocations(paths: Sequence[str | os.PathLike], labels: Mapping[str, str]) -> dict[str, dict]:
    """row label -> {module: rank} of every ``rank_allocation.json``."""
    out = {}
    for p in paths:
        data = read_json(p)
        if isinstance(data, dict) and isinstance(data.get("ranks"), dict):
            data = data["ranks"]
        job = Path(p).parent.name
        out[labels.get(job, job)] = {k: int(v) for k, v in (data or {}).items()}
    return out


def add_default_points(spec: Mapping, defaults: Mapping[str, dict]) -> dict:
    """``spec`` with each sweep extended by the default merge of its method, at the value of the
    swept hyperparameter that merge used (``defaults``: method -> resolved hyperparameters, the
    spec's ``default_merges``), so that a sweep of β over 0.1 and 0.5 is drawn and tabled through
    the default 0.3. Points already present are kept as they are; without the default row or its
    hyperparameters the sweep is unchanged."""
    rows = {r.get("model"): r for r in spec.get("rows", [])}
    models = spec.get("default_models") or {}
    sweeps = []
    for sw in spec.get("sweeps", []):
        value = defaults.get(sw["method"], {}).get(sw["param"])
        model = models.get(sw["method"], N.merge_model(sw["method"]))
        points = list(sw["points"])
        if model in rows and isinstance(value, (int, float)) and all(float(p["value"]) != float(value) for p in points):
            seeds = {"seeds": rows[model]["seeds"]} if "seeds" in rows[model] else {}
            points.append({"value": value, "model": model, "default": True, **seeds})
            points.sort(key=lambda p: float(p["value"]))
        sweeps.append({**sw, "points": points})
    return {**spec, "sweeps": sweeps}


def boost_params(spec: Mapping) -> tuple[float | None, str]:
    """(β, energy) of the default BoostedTSV-M merge when the report has one, else (None, "kept")."""
    if not any(r.get("method") == "boosted_tsv_m" for r in spec["rows"]):
        return None, "kept"
    hp = (spec.get("default_merges") or {}).get("boosted_tsv_m")
    if hp is None:  # a spec not built by the plan: the method's own defaults
        from speechmerge.merging import get_method

        hp = get_method("boosted_tsv_m").hparams
    return float(hp["beta"]), str(hp["energy"])


def summary_columns(table: Table) -> list[str]:
    means = [c.key for c in table.columns if c.kind == "mean" and c.show]
    keys = means or [c.key for c in table.columns if c.kind == "base" and c.show]
    return keys + [c.key for c in table.columns if c.kind == "params_pct"]


class _Listing:
    """The files of a report with their captions, in the order they are written."""

    def __init__(self) -> None:
        self.files: list[dict] = []

    def add(self, name: str, caption: str, kind: str) -> None:
        self.files.append({"file": name, "caption": caption, "kind": kind})

    def with_pdfs(self) -> list[dict]:
        """Every figure is written as PNG and PDF; the PDFs are listed after everything else."""
        return self.files + [{**f, "file": f["file"][:-4] + ".pdf"} for f in self.files if f["file"].endswith(".png")]


def write_report(
    spec: Mapping,
    out_dir: str | os.PathLike,
    *,
    scores: Sequence[str | os.PathLike],
    hyps: Sequence[str | os.PathLike] = (),
    train_infos: Sequence[str | os.PathLike] = (),
    rank_allocations: Sequence[str | os.PathLike] = (),
    taskvectors: Sequence[str | os.PathLike] = (),
    cosines: Sequence[str | os.PathLike] = (),
    merge_infos: Sequence[str | os.PathLike] = (),
    n_boot: int = 1000,
    seed: int = 0,
    verify: bool = True,
) -> dict:
    """Write the whole report directory atomically; return the summary dict.

    First (``verify``) every score is checked against its hypotheses
    (``speechmerge.report.verify``): a mismatch stops the report before any table is written.
    """
    from speechmerge.report.verify import check_contexts, verify_results
    from speechmerge.utils import atomic_path, provenance

    if verify:
        verify_results(scores, hyps)
        check_contexts(spec, scores)
    exp, lay = spec["experiment"], layout(spec)
    spec = add_default_points(spec, spec.get("default_merges") or {})
    store = ResultStore(
        load_scores(scores), load_hyps(hyps), n_boot=n_boot, seed=seed, metric_override=lay.metric_override
    )
    infos = read_train_infos(train_infos)
    params = train_params(infos) if lay.counts_parameters else None
    tables = build_tables(spec, store, params=params)
    claims = CL.evaluate_claims(
        spec, store, params=params, rank_allocations=read_rank_allocations(rank_allocations, {})
    )
    run_prov = run_provenance(spec, scores, infos)
    selections = SEL.read_selections(merge_infos)
    selected_labels = {r["method"]: r["label"] for r in spec["rows"] if r.get("selected_on")}
    if selections:
        tables["table"].notes.append(SEL.chosen_note(selections, selected_labels))
    long_note, bad_note = long_utterance_note(run_prov), bad_audio_note(run_prov)
    for t in tables.values():
        for note in (long_note, bad_note):
            if note:
                t.notes.append(note)
        t.notes.append(footnote(run_prov))
    cosine_data = read_json(cosines[0]) if cosines else None
    training_rows = TR.training_rows(spec, store, {job: info for job, (_, info) in infos.items()})
    caps = report_captions(spec)
    listing = _Listing()

    with atomic_path(out_dir, is_dir=True) as tmp:
        _write_tables(tmp, exp, tables, training_rows, caps, listing)
        if cosine_data is not None:
            (tmp / "taskvector_cosines.md").write_text(C.cosines_markdown(exp, cosine_data))
            (tmp / "taskvector_cosines.csv").write_text(C.cosines_csv(cosine_data))
            for ext in ("csv", "md"):
                listing.add(f"taskvector_cosines.{ext}", caps["taskvector_cosines.csv"], "table")
        if selections:
            sel_rows = SEL.selection_rows(selections, selected_labels)
            (tmp / "merge_selection.csv").write_text(SEL.to_csv(sel_rows))
            (tmp / "merge_selection.md").write_text(
                SEL.to_markdown(sel_rows, f"{exp}: merging hyperparameters chosen on the dev split")
            )
            for ext in ("csv", "md"):
                listing.add(f"merge_selection.{ext}", caps["merge_selection.csv"], "table")
            from speechmerge.report import figures as F

            F.selection_plot(
                selections, selected_labels, tmp / "merge_selection", title=f"{exp}: dev score at each grid point"
            )
            listing.add("merge_selection.png", caps["merge_selection.png"], "figure")
        claims_md = ""
        if CL.claims_for(spec["kind"]):  # a study of the user's own experts has no paper claims
            claims_md = CL.to_markdown(
                claims,
                f"{exp}: the paper's claims on our results",
                n_boot=n_boot,
                seed=seed,
                seeds=len(spec.get("seeds") or [seed]),
            )
            if long_note:  # the claims rest on the same test scores
                claims_md += "\n" + long_note + "\n"
            (tmp / "claims.csv").write_text(CL.to_csv(claims))
            (tmp / "claims.md").write_text(claims_md)
            for ext in ("csv", "md"):
                listing.add(f"claims.{ext}", caps["claims.csv"], "table")
        _write_figures(tmp, spec, tables, taskvectors, rank_allocations, caps, listing)
        files = listing.with_pdfs()
        summary = {
            "experiment": exp,
            "kind": spec["kind"],
            "files": files,
            "missing": sorted(set(store.missing)),
            "tables": {name: R.table_json(t) for name, t in tables.items()},
            "training": training_rows,
            "claims": [c.as_dict() for c in claims],
            "bootstrap": {"n_boot": n_boot, "seed": seed},
            "provenance": provenance(None, config_hash=spec.get("config_hash"), run=run_prov),
            "taskvector_cosines": C.cosine_rows(cosine_data) if cosine_data else [],
            "merge_selection": selections,
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=json_default) + "\n")
        (tmp / "README.md").write_text(
            _readme(exp, tables, files, summary["missing"], training_rows, claims_md, cosine_data=cosine_data)
        )
    log.info("report %s: %d files, %d missing cells", out_dir, len(files) + 2, len(summary["missing"]))
    return summary


def _write_tables(
    tmp: Path,
    exp: str,
    tables: Mapping[str, Table],
    training_rows: Sequence[Mapping],
    caps: Mapping[str, str],
    listing: _Listing,
) -> None:
    for name, t in tables.items():
        (tmp / f"{name}.csv").write_text(R.to_csv(t))
        (tmp / f"{name}.md").write_text(R.to_markdown(t))
        (tmp / f"{name}.tex").write_text(R.to_latex(t, label=f"{exp}-{name}"))
        for ext in ("csv", "md", "tex"):
            listing.add(
                f"{name}.{ext}", t.title + (" (all columns, 95 % CIs, p-values)" if ext == "csv" else ""), "table"
            )
    if training_rows:
        title = f"{exp}: each fine-tuned model on its own test sets, against the model it started from"
        (tmp / "training.csv").write_text(TR.to_csv(training_rows))
        (tmp / "training.md").write_text(TR.to_markdown(training_rows, title))
        for ext in ("csv", "md"):
            listing.add(f"training.{ext}", caps["training.csv"], "table")
    (tmp / "significance.csv").write_text(R.significance_csv(list(tables.values())))
    listing.add("significance.csv", caps["significance.csv"], "table")


def _write_figures(
    tmp: Path,
    spec: Mapping,
    tables: Mapping[str, Table],
    taskvectors: Sequence,
    rank_allocation_files: Sequence,
    caps: Mapping[str, str],
    listing: _Listing,
) -> None:
    from speechmerge.report import figures as F

    exp, main = spec["experiment"], tables["table"]
    F.method_bars(main, summary_columns(main), tmp / "methods", title=f"{exp}: methods compared")
    listing.add("methods.png", caps["methods.png"], "figure")
    for sw in spec.get("sweeps", []):
        name = N.sweep_table_name(sw["method"], sw["param"])
        _sweep_figure(tmp, spec, main, tables[name], sw)
        listing.add(f"{name}.png", caps[f"{name}.png"], "figure")
    if "forgetting" in tables:
        F.forgetting_plot(tables["forgetting"], tmp / "forgetting", title=f"{exp}: forgetting in sequential training")
        listing.add("forgetting.png", caps["forgetting.png"], "figure")

    tv_by_job = {Path(p).stem: p for p in taskvectors}
    tv = [(subset, tv_by_job[job]) for subset, job in (spec.get("experts") or {}).items() if job in tv_by_job]
    if len(tv) >= 2:
        labels, paths = [s for s, _ in tv], [p for _, p in tv]
        F.cosine_heatmap(
            paths, labels, tmp / "taskvector_cosine", title=f"{exp}: cosine similarity of expert task vectors"
        )
        listing.add("taskvector_cosine.png", caps["taskvector_cosine.png"], "figure")
        beta, energy = boost_params(spec)
        F.spectra_plot(
            paths,
            labels,
            tmp / "taskvector_spectra",
            beta=beta,
            energy=energy,
            title=f"{exp}: singular values of task-vector matrices",
        )
        listing.add(
            "taskvector_spectra.png", caps["taskvector_spectra.png"] + (f" β = {beta:g}." if beta else ""), "figure"
        )

    if rank_allocation_files:
        labels = {r["model"]: r.get("label", r["model"]) for r in spec["rows"]}
        for r in spec["rows"]:  # several training seeds: one allocation per seed
            for seed, m in (r.get("seeds") or {}).items():
                if isinstance(m, str):
                    labels[m] = f"{r.get('label', r['model'])} (seed {seed})"
        allocs = read_rank_allocations(rank_allocation_files, labels)
        if any(allocs.values()):
            F.rank_heatmap(allocs, tmp / "rank_allocation", title=f"{exp}: learned rank per module")
            listing.add("rank_allocation.png", caps["rank_allocation.png"], "figure")


def _sweep_figure(tmp: Path, spec: Mapping, main: Table, table: Table, sw: Mapping) -> None:
    """A sweep against its hyperparameter, with the baseline row and the method's default merge
    (unless the default is already a point of the sweep) as dashed reference lines."""
    from speechmerge.report import figures as F

    refs = {}
    ref_model = spec.get("baseline_for_significance")
    if ref_model:
        row = next((r for r in main.rows if r.model == ref_model), None)
        if row:
            refs[row.label] = {k: c.value for k, c in row.cells.items()}
    default = next((r for r in main.rows if r.spec.get("method") == sw["method"]), None)
    if default and not any(p.get("default") for p in sw["points"]):
        refs[f"{default.label} (default)"] = {k: c.value for k, c in default.cells.items()}
    keys = [c.key for c in table.columns if c.show and c.kind in ("mean", "np")]
    F.sweep_plot(
        table,
        [p["value"] for p in sw["points"]],
        sw["param"],
        keys,
        tmp / table.name,
        references=refs,
        title=table.title,
        method_label=default.label if default else sw.get("label", sw["method"]),
        default_value=next((p["value"] for p in sw["points"] if p.get("default")), None),
    )


def _readme(
    exp: str,
    tables: Mapping[str, Table],
    files: Sequence[Mapping],
    missing: Sequence[str],
    training_rows: Sequence[Mapping] = (),
    claims_md: str = "",
    cosine_data: Mapping | None = None,
) -> str:
    lines = [f"# Report: {exp}", "", R.to_markdown(tables["table"])]
    if "context" in tables:
        lines += ["", R.to_markdown(tables["context"])]
    if cosine_data:
        lines += ["", C.cosines_markdown(exp, cosine_data).rstrip("\n")]
    if training_rows:
        lines += ["", TR.to_markdown(training_rows, "Fine-tuned models against the model they started from")]
    if claims_md:
        lines += ["", "## Claims", "", claims_md.rstrip("\n")]
    lines += ["", "## Files", ""]
    for f in files:
        lines.append(f"* `{f['file']}` — {f['caption']}")
    lines += ["* `summary.json` — every table as numbers, this listing, provenance"]
    if missing:
        lines += ["", "## Missing results", ""] + [f"* {m}" for m in missing]
    return "\n".join(lines) + "\n"
