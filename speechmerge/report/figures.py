"""Report figures (matplotlib, Agg backend), each saved as PNG and PDF.

* ``method_bars``: one bar per method (row) with its 95 % bootstrap interval, one panel per
  summary column (e.g. average ASR WER, average ST BLEU), per-test-set values as dots.
* ``sweep_plot``: a metric against a merging hyperparameter (λ, β, ...), with 95 % bands.
* ``selection_plot``: each dev-selected method's dev score at every grid point, the chosen
  point starred and the paper-default point (when in the grid) boxed.
* ``cosine_heatmap``: cosine similarity between experts' task vectors, over the concatenation
  of all attention / MLP weight matrices (``speechmerge.merging.base.is_matrix``); computed
  tensor by tensor from the safetensors files (``taskvector_gram``), never all at once.
* ``spectra_plot``: singular values of a few task-vector matrices per expert, with the
  BoostedTSV-M boosted spectrum (``speechmerge.merging.linalg.boost_spectrum``) overlaid.
* ``forgetting_plot``: error rate on every subset after each stage of sequential training.
* ``rank_heatmap``: learned rank per adapted module (module type x layer) for AdaLoRA / S2-LoRA.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from speechmerge.report.table import Column, Table  # noqa: E402

DPI = 150


def save(fig, path_stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``{stem}.png`` and ``{stem}.pdf``; close it; return both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        p = stem.with_suffix(f".{ext}")
        fig.savefig(p, dpi=DPI, bbox_inches="tight")
        out.append(p)
    plt.close(fig)
    return out


def _axis_label(c: Column) -> str:
    if c.kind == "params_pct":
        return "trainable parameters (% of the model, log scale)"
    if c.kind == "params":
        return "trainable parameters (log scale)"
    unit = " (%)" if c.metric in ("wer", "cer") else ""
    name = {"wer": "WER", "cer": "CER", "bleu": "BLEU", "chrf": "chrF", "np": "normalised performance"}.get(
        c.metric, c.metric
    )
    arrow = "higher is better" if c.higher_is_better else "lower is better"
    return f"{name}{unit} — {arrow}"


def _panel_title(c: Column) -> str:
    if c.kind in ("params", "params_pct"):
        return "Trainable parameters"
    g = c.group.replace(" (%)", "").replace(" ↓", "").replace(" ↑", "")
    if c.kind == "mean" and len(c.parts) == 1:
        what = c.header
    elif c.kind == "mean":
        what = f"mean over {len(c.parts)} test sets"
        what = what if c.header == "Avg" else f"{c.header} ({what})"
    else:
        what = c.header
    return f"{g} — {what}" if g else what


# --------------------------------------------------------------------------- bars


def method_bars(table: Table, columns: Sequence[str], path_stem, *, title: str | None = None) -> list[Path]:
    """Bars per row for each column key in ``columns`` (one panel each), 95 % CI whiskers; for
    mean columns the values of their parts are drawn as dots."""
    cols = [next(c for c in table.columns if c.key == k) for k in columns]
    rows = table.rows
    n = len(cols)
    # at most two panels side by side, so the figure stays readable at the report's panel width
    ncols = min(2, n)
    nrows = math.ceil(n / ncols)
    panel_h = max(2.6, 0.3 * len(rows) + 1.0)
    height = panel_h * nrows + 1.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + 1.8, height), sharey=True, squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    y = np.arange(len(rows))
    groups = list(dict.fromkeys(r.group for r in rows))
    palette = plt.get_cmap("tab10")
    colors = [palette(groups.index(r.group) % 10) for r in rows]
    for ax, c in zip(axes.flat, cols):
        vals = np.array([r.cells[c.key].value for r in rows], dtype=float)
        if c.kind in ("params", "params_pct"):
            vals[vals <= 0] = np.nan  # log axis; zero-shot trains nothing
            ax.set_xscale("log")
        lo = np.array([r.cells[c.key].ci[0] if r.cells[c.key].ci else np.nan for r in rows])
        hi = np.array([r.cells[c.key].ci[1] if r.cells[c.key].ci else np.nan for r in rows])
        ax.barh(
            y,
            np.where(np.isnan(vals), 0 if c.kind not in ("params", "params_pct") else np.nan, vals),
            color=colors,
            alpha=0.85,
            height=0.7,
        )
        # a percentile interval may (rarely, e.g. BLEU on few segments) not contain the estimate
        err = np.clip(np.vstack([vals - lo, hi - vals]), 0, None)
        ok = ~np.isnan(err).any(axis=0) & ~np.isnan(vals)
        if ok.any():
            ax.errorbar(vals[ok], y[ok], xerr=err[:, ok], fmt="none", ecolor="black", capsize=3, lw=1)
        if c.kind == "mean" and len(c.parts) > 1:
            for part in c.parts:
                pv = np.array([r.cells[part].value for r in rows], dtype=float)
                pv[np.isnan(vals)] = np.nan  # no dots where the mean itself is undefined
                ax.scatter(pv, y, s=10, color="0.25", zorder=3, marker="o", alpha=0.6)
        for yi, v in zip(y, vals):
            if math.isnan(v):
                ax.text(0.01, yi, " n/a", va="center", fontsize=8, color="0.4", transform=ax.get_yaxis_transform())
        ax.set_title(_panel_title(c), fontsize=10)
        ax.set_xlabel(_axis_label(c), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    for row in axes:
        row[0].set_yticks(y)
        row[0].set_yticklabels([r.label for r in rows], fontsize=9)
        row[0].tick_params(labelleft=True)
    axes[0][0].invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette(i % 10)) for i in range(len(groups))]
    extra = "; dots: per-test-set values" if any(c.kind == "mean" and len(c.parts) > 1 for c in cols) else ""
    fig.legend(handles, groups, loc="lower center", ncol=len(groups), fontsize=8, frameon=False)
    fig.suptitle((title or table.title) + f"\n(whiskers: 95 % bootstrap CI{extra})", fontsize=11)
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1 - 0.8 / height))  # room for the two-line title
    return save(fig, path_stem)


# --------------------------------------------------------------------------- sweeps


def sweep_plot(
    table: Table,
    values: Sequence[float],
    param: str,
    columns: Sequence[str],
    path_stem,
    *,
    references: Mapping[str, Mapping[str, float]] | None = None,
    title: str | None = None,
    method_label: str = "merge",
    default_value: float | None = None,
) -> list[Path]:
    """Metric vs swept hyperparameter, one panel per column (at most 2 per row); ``references``
    = {label: {key: value}} drawn as horizontal lines (e.g. the joint model, the default merge);
    ``default_value``: the swept value that is the method's default, labelled so on the axis."""
    cols = [next(c for c in table.columns if c.key == k) for k in columns]
    x = np.asarray(values, dtype=float)
    order = np.argsort(x)
    ncols = min(2, len(cols))  # two panels a row stay readable at the report panel's width
    nrows = math.ceil(len(cols) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.3 * nrows + 0.6), squeeze=False)
    styles = ["--", ":", "-."]
    for ax, c in zip(axes.flat, cols):
        v = np.array([r.cells[c.key].value for r in table.rows], dtype=float)[order]
        ci = [table.rows[i].cells[c.key].ci for i in order]
        ax.plot(x[order], v, "o-", color="C0", label=method_label)
        if all(ci):
            ax.fill_between(
                x[order],
                [a for a, _ in ci],
                [b for _, b in ci],
                color="C0",
                alpha=0.2,
                label=f"{method_label}: 95 % CI",
            )
        for j, (name, vals) in enumerate((references or {}).items()):
            if c.key in vals and not math.isnan(vals[c.key]):
                ax.axhline(vals[c.key], ls=styles[j % 3], color=f"C{j + 1}", lw=1.2, label=name)
        ax.set_xlabel(_greek(param))
        ax.set_ylabel(_axis_label(c), fontsize=8)
        ax.set_title(_panel_title(c), fontsize=10)
        ax.set_xticks(x[order])
        ax.set_xticklabels(
            [
                f"{v:g}\n(default)" if default_value is not None and float(v) == float(default_value) else f"{v:g}"
                for v in x[order]
            ]
        )
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cols) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(title or table.title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06 if nrows == 1 else 0.04, 1, 1))
    return save(fig, path_stem)


# A dev curve spans at least this many points (NP, WER) on its y axis, so that differences of a
# few hundredths are not drawn as slopes.
MIN_SELECTION_SPAN = 2.0


def selection_plot(selections: Sequence[Mapping], labels: Mapping[str, str], path_stem, *, title: str) -> list[Path]:
    """One panel per dev-selected method: the dev score of every grid point (in grid order,
    labelled by its values), the chosen point as a star. ``selections``: the merge infos'
    ``selection`` dicts (``speechmerge.report.selection.read_selections``)."""
    from speechmerge.report.selection import METRIC_LABELS, point_label, selection_label

    n = len(selections)
    cols = min(4, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, sel in zip(axes.flat, selections):
        curve = sel["curve"]
        x = np.arange(len(curve))
        y = np.array([c["score"] for c in curve], dtype=float)
        ax.plot(x, y, "o-", color="C0", lw=1.2, ms=4)
        finite = y[np.isfinite(y)]
        if finite.size and finite.max() - finite.min() < MIN_SELECTION_SPAN:  # flat stays flat
            mid = (finite.max() + finite.min()) / 2
            ax.set_ylim(mid - MIN_SELECTION_SPAN / 2, mid + MIN_SELECTION_SPAN / 2)
        d = sel.get("default_index")
        if d is not None:
            ax.plot([d], [y[d]], "s", mfc="none", color="0.3", ms=9, label="paper default")
        k = sel["chosen_index"]
        ax.plot([k], [y[k]], "*", color="C3", ms=13, label="chosen")
        ax.set_xticks(x)
        ax.set_xticklabels([point_label(c["hparams"]) for c in curve], rotation=30 if len(curve) > 3 else 0,
                           ha="right" if len(curve) > 3 else "center", fontsize=7)  # fmt: skip
        ax.set_title(selection_label(sel, labels), fontsize=9)
        ax.set_ylabel(METRIC_LABELS.get(sel["metric"], sel["metric"]), fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if n:
        handles, names = [], []
        for ax in list(axes.flat)[:n]:  # one legend with both markers, if any panel has both
            h, lb = ax.get_legend_handles_labels()
            if len(lb) > len(names):
                handles, names = h, lb
        axes.flat[0].legend(handles, names, fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path_stem)


def _greek(param: str) -> str:
    return {"lambda": "λ (scaling)", "beta": "β (energy threshold)", "scaling": "scaling coefficient"}.get(param, param)


# --------------------------------------------------------------------------- task vectors


def _matrix_keys(path) -> list[str]:
    from safetensors import safe_open

    from speechmerge.merging.base import MATRIX_PATTERN

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        return [k for k in keys if MATRIX_PATTERN.search(k) and len(f.get_slice(k).get_shape()) == 2]


def taskvector_gram(paths: Sequence[str | Path]) -> tuple[np.ndarray, list[str]]:
    """Gram matrix G_ij = <tau_i, tau_j> over all attention / MLP matrices, streamed key by key
    (one tensor per expert in memory). Raises if the files do not hold the same matrices."""
    from safetensors import safe_open

    keys = _matrix_keys(paths[0])
    if not keys:
        raise ValueError(f"{paths[0]}: no attention / MLP weight matrices found")
    handles = [safe_open(str(p), framework="pt") for p in paths]
    try:
        for p, h in zip(paths, handles):
            missing = sorted(set(keys) - set(h.keys()))
            if missing:
                raise ValueError(f"{p}: task vector lacks {len(missing)} matrices, e.g. {missing[:2]}")
        n = len(paths)
        gram = np.zeros((n, n), dtype=np.float64)
        for k in keys:
            ts = [h.get_tensor(k).double().reshape(-1) for h in handles]
            shapes = {t.shape for t in ts}
            if len(shapes) > 1:
                raise ValueError(f"tensor {k}: shapes differ between task vectors {sorted(shapes)}")
            stack = np.stack([t.numpy() for t in ts])
            gram += stack @ stack.T
    finally:
        for h in handles:
            if hasattr(h, "__exit__"):
                try:
                    h.__exit__(None, None, None)
                except Exception:
                    pass
    return gram, keys


def cosine_from_gram(gram: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.clip(np.diag(gram), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = gram / np.outer(d, d)
    return np.where(np.outer(d, d) > 0, cos, np.nan)


def cosine_heatmap(
    paths: Sequence[str | Path], labels: Sequence[str], path_stem, *, title: str
) -> tuple[list[Path], np.ndarray]:
    gram, keys = taskvector_gram(paths)
    cos = cosine_from_gram(gram)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.6 + 0.7 * n))
    off = cos[~np.eye(n, dtype=bool)]
    vmax = float(np.nanmax(np.abs(off))) if off.size and np.isfinite(off).any() else 1.0
    vmax = max(vmax, 1e-3)
    im = ax.imshow(cos, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{cos[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if abs(cos[i, j]) > 0.6 * vmax else "black",
            )
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("cosine similarity (diagonal = 1; colour scaled to off-diagonal)", fontsize=8)
    ax.set_title(f"{title}\n({len(keys)} attention/MLP matrices, flattened)", fontsize=10)
    fig.tight_layout()
    return save(fig, path_stem), cos


def representative_keys(keys: Sequence[str], k: int = 4) -> list[str]:
    """A few matrices spread over the network: first encoder self-attention query, a middle
    encoder fc1, a middle decoder cross-attention value, the last decoder self-attention output."""

    def layers(side):
        return sorted({int(m.group(1)) for key in keys if (m := re.search(rf"{side}\.layers\.(\d+)\.", key))})

    enc, dec = layers("encoder"), layers("decoder")
    wanted = []
    if enc:
        wanted += [
            f"encoder.layers.{enc[0]}.self_attn.q_proj.weight",
            f"encoder.layers.{enc[len(enc) // 2]}.fc1.weight",
        ]
    if dec:
        wanted += [
            f"decoder.layers.{dec[len(dec) // 2]}.encoder_attn.v_proj.weight",
            f"decoder.layers.{dec[-1]}.self_attn.out_proj.weight",
        ]
    out = []
    for w in wanted:
        match = next((key for key in keys if key.endswith(w)), None)
        if match and match not in out:
            out.append(match)
    for key in keys:  # fall back to any matrices
        if len(out) >= k:
            break
        if key not in out:
            out.append(key)
    return out[:k]


def boost(sigma: np.ndarray, beta: float) -> np.ndarray:
    """``speechmerge.merging.linalg.boost_spectrum`` (E_j = cumsum(σ²)/Σσ², j* = min{j: E_j ≥ β},
    σ_i ← max(σ_i, σ_j*))."""
    import torch

    from speechmerge.merging.linalg import boost_spectrum

    return boost_spectrum(torch.as_tensor(sigma, dtype=torch.float32), float(beta)).numpy()


def spectra_plot(
    paths: Sequence[str | Path],
    labels: Sequence[str],
    path_stem,
    *,
    beta: float | None,
    title: str,
    n_keys: int = 4,
    energy: str = "kept",
) -> list[Path]:
    """Singular values (descending) of a few task-vector matrices per expert; with ``beta``, the
    boosted spectrum of each expert is drawn dashed, as BoostedTSV-M uses it
    (``speechmerge.merging.methods.boosted_tsv_m``): TSV-M keeps the top k = max(1, r // N)
    singular values of each of the N task vectors, and boosting acts on that kept part
    (``energy="kept"``: E_j over σ[:k]; ``"full"``: E_j over the whole spectrum, then [:k])."""
    import torch
    from safetensors import safe_open

    keys = representative_keys(_matrix_keys(paths[0]), n_keys)
    ncols = min(2, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.4 * nrows + 0.8), squeeze=False)
    boosted = beta is not None and beta < 1
    for ax, key in zip(axes.flat, keys):
        for i, p in enumerate(paths):
            with safe_open(str(p), framework="pt") as f:
                m = f.get_tensor(key).float()
            s = torch.linalg.svdvals(m).numpy()
            idx = np.arange(1, s.size + 1)
            ax.semilogy(idx, np.clip(s, 1e-12, None), color=f"C{i % 10}", lw=1.3)
            if boosted:
                k = max(1, s.size // len(paths))
                b = boost(s[:k], beta) if energy == "kept" else boost(s, beta)[:k]
                ax.semilogy(idx[:k], np.clip(b, 1e-12, None), color=f"C{i % 10}", lw=1.0, ls="--")
        if boosted:
            ax.axvline(max(1, s.size // len(paths)), color="0.4", lw=0.8, ls=":")
        ax.set_title(f"{_short_key(key)}  ({m.shape[0]}×{m.shape[1]})", fontsize=9)
        ax.set_xlabel("singular value index (descending)")
        ax.set_ylabel("σ (log scale)")
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=f"C{i % 10}", lw=1.5) for i in range(len(labels))]
    names = list(labels)
    if boosted:
        handles += [plt.Line2D([], [], color="0.3", lw=1.3), plt.Line2D([], [], color="0.3", lw=1.0, ls="--")]
        handles.append(plt.Line2D([], [], color="0.4", lw=0.8, ls=":"))
        names += ["task vector ΔW", f"boosted kept part (β = {beta:g})", f"k = r // {len(paths)} kept by TSV-M"]
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 9), fontsize=8, frameon=False)
    sub = (
        (
            "solid: singular values of each expert's ΔW; dashed: the top k that TSV-M keeps, after BoostedTSV-M "
            f"boosting σ_i ← max(σ_i, σ_j*),\nj* = first index whose cumulative energy reaches β = {beta:g} "
            f"(energy of the {'kept part' if energy == 'kept' else 'whole spectrum'})"
        )
        if boosted
        else "singular values of each expert's ΔW"
    )
    fig.suptitle(f"{title}\n({sub})", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save(fig, path_stem)


def _short_key(key: str) -> str:
    k = re.sub(r"^(model\.)?", "", key).replace(".weight", "")
    return k.replace("layers.", "L").replace("encoder_attn", "cross_attn")


# --------------------------------------------------------------------------- sequential


def forgetting_plot(table: Table, path_stem, *, title: str) -> list[Path]:
    """One line per subset: its error rate after each sequential stage; a marker where the stage
    trained on it."""
    cols = [c for c in table.columns if c.kind == "base"]
    stages = np.array([r.spec.get("stage", k + 1) for k, r in enumerate(table.rows)])
    fig, ax = plt.subplots(figsize=(1.2 * len(stages) + 3.5, 3.8))
    for i, c in enumerate(cols):
        v = np.array([r.cells[c.key].value for r in table.rows], dtype=float)
        ax.plot(stages, v, "o-", color=f"C{i % 10}", label=c.header, lw=1.4, ms=4)
        trained = [k for k, r in enumerate(table.rows) if r.spec.get("subset") == c.subset]
        for k in trained:
            ax.plot(stages[k], v[k], marker="*", ms=13, color=f"C{i % 10}", markeredgecolor="black", zorder=4)
    ax.set_xticks(stages)
    ax.set_xticklabels(
        [
            f"{k}\n+{r.spec['subset']}" if r.spec.get("subset") else f"{k}\n{r.label.split(': ')[-1]}"
            for k, r in zip(stages, table.rows)
        ]
    )
    ax.set_xlabel("sequential stage (subset added)")
    metric = cols[0].metric.upper() if cols else "WER"
    ax.set_ylabel(f"{metric} (%) — lower is better")
    ax.grid(alpha=0.3)
    ax.legend(title="test set", fontsize=8, title_fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.set_title(f"{title}\n(★ = stage trained on that subset)", fontsize=10)
    fig.tight_layout()
    return save(fig, path_stem)


# --------------------------------------------------------------------------- rank allocation

_MODULE_RE = re.compile(
    r"(encoder|decoder)\.layers\.(\d+)\.(self_attn|encoder_attn)?\.?(q_proj|k_proj|v_proj|out_proj|fc1|fc2)$"
)
_MODULE_ORDER = [
    (side, att, proj)
    for side in ("encoder", "decoder")
    for att, projs in (
        ("self_attn", ("q_proj", "k_proj", "v_proj", "out_proj")),
        ("encoder_attn", ("q_proj", "k_proj", "v_proj", "out_proj")),
        ("", ("fc1", "fc2")),
    )
    for proj in projs
    if not (side == "encoder" and att == "encoder_attn")
]


def rank_grid(ranks: Mapping[str, int]) -> tuple[np.ndarray, list[str], list[int]]:
    """{module name: rank} -> matrix [module type, layer] (NaN where not adapted)."""
    parsed = {}
    for name, r in ranks.items():
        m = _MODULE_RE.search(name.replace(".weight", ""))
        if not m:
            continue
        side, layer, att, proj = m.group(1), int(m.group(2)), m.group(3) or "", m.group(4)
        parsed[(side, att, proj, layer)] = float(r)
    if not parsed:
        raise ValueError(
            f"rank allocation: no module names of the form "
            f"'...(encoder|decoder).layers.N.(self_attn|encoder_attn).q_proj' among {list(ranks)[:3]}"
        )
    types = [t for t in _MODULE_ORDER if any(k[:3] == t for k in parsed)]
    layers = sorted({k[3] for k in parsed})
    grid = np.full((len(types), len(layers)), np.nan)
    for (side, att, proj, layer), r in parsed.items():
        grid[types.index((side, att, proj)), layers.index(layer)] = r
    labels = [
        f"{'enc' if s == 'encoder' else 'dec'} {'self' if a == 'self_attn' else 'cross' if a else 'mlp'} "
        f"{p.replace('_proj', '')}"
        for s, a, p in types
    ]
    return grid, labels, layers


def rank_heatmap(allocations: Mapping[str, Mapping[str, int]], path_stem, *, title: str) -> list[Path]:
    """One panel per method: learned rank per module type (rows) and layer (columns)."""
    items = [(k, v) for k, v in allocations.items() if v]
    if not items:
        raise ValueError("no non-empty rank allocation to plot")
    grids = [(name, *rank_grid(r)) for name, r in items]
    n = len(grids)
    width = sum(1.6 + 0.45 * len(g[3]) for g in grids) + 1.5
    height = 0.3 * max(len(g[2]) for g in grids) + 1.8
    fig, axes = plt.subplots(
        1, n, figsize=(width, height), squeeze=False, gridspec_kw={"width_ratios": [len(g[3]) + 3 for g in grids]}
    )
    # one colour scale for every panel, so equal colours mean equal ranks across methods
    vmax = max([1.0] + [float(np.nanmax(g[1])) for g in grids if np.isfinite(g[1]).any()])
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    for ax, (name, grid, labels, layers) in zip(axes[0], grids):
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if grid[i, j] < 0.6 * vmax else "black",
                    )
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, fontsize=8)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_xlabel("layer")
        n_enc = sum(lab.startswith("enc") for lab in labels)
        if 0 < n_enc < len(labels):
            ax.axhline(n_enc - 0.5, color="white", lw=2)
        total = int(np.nansum(grid))
        ax.set_title(f"{name} (total rank {total})", fontsize=10)
    fig.suptitle(f"{title}\n(grey: module not adapted; one colour scale, 0-{vmax:g})", fontsize=11)
    fig.tight_layout()
    cb = fig.colorbar(im, ax=list(axes[0]), fraction=0.04, pad=0.02)
    cb.ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    cb.set_label("rank", fontsize=8)
    return save(fig, path_stem)
