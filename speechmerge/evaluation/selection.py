"""Choosing a merge's hyperparameters on the dev split: what the ``merge`` rule runs for a
dev-selected variant.

1. Every point of the method's grid is merged from one read of the experts
   (``speechmerge.merging.grid``); nothing but the chosen point is ever written.
2. The model is loaded once; each point's weights are copied into it and the experiment's dev
   sets are decoded and scored (one process for the whole grid).
3. The point with the best dev score wins (``choose``): NP against the experts' dev scores
   (multilingual: ``np``, higher is better, the report's formula) or the mean error rate over the
   dev sets (domains: ``mean_error``, lower is better). A tie goes to the earlier point in grid
   order. When NP is undefined at every point (the experts' dev accuracy is 0 on every dev set,
   e.g. an untrained model), the mean accuracy (``mean_accuracy``) decides and the merge info
   says so. Only dev files are inputs of the job, so no test score can take part.
4. The chosen point's merged weights are written (atomically) where the plain merge writes
   them, with the whole dev curve in the merge info.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping, Sequence

from speechmerge.evaluation.corpus_metrics import ERROR_METRICS, accuracy

log = logging.getLogger(__name__)

METRICS = {"np": True, "mean_error": False, "mean_accuracy": True}  # selection metric -> higher is better


def primary_values(results: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, float]]:
    """Dev set -> (its primary metric, value) from score records (``evaluate_model`` format)."""
    out = {}
    for r in results:
        metric = r["primary_metric"]
        out[r["testset"]] = (metric, float(r["metrics"][metric]))
    return out


def dev_score(results: Sequence[Mapping[str, Any]], metric: str, reference: Mapping[str, float] | None = None) -> float:
    """One number per grid point from its dev score records.

    ``mean_error``: mean of the primary error rates (WER / CER) over the dev sets.
    ``np``: 100 · mean over dev sets of accuracy(point) / accuracy(reference), accuracy as in
    ``accuracy``; ``reference`` maps dev set -> the experts' primary value; sets whose reference
    accuracy is 0 are skipped (as in the report)."""
    values = primary_values(results)
    if not values:
        raise ValueError("no dev scores to select on")
    if metric == "mean_error":
        bad = [t for t, (m, _) in values.items() if m not in ERROR_METRICS]
        if bad:
            raise ValueError(f"selection metric mean_error needs error-rate dev sets; {bad} are scored otherwise")
        return float(sum(v for _, v in values.values()) / len(values))
    if metric == "mean_accuracy":
        return float(sum(accuracy(m, v) for m, v in values.values()) / len(values))
    if metric == "np":
        if reference is None:
            raise ValueError("selection metric np needs the experts' dev scores")
        missing = sorted(set(values) - set(reference))
        if missing:
            raise ValueError(f"selection metric np: no expert dev score for dev set(s) {missing}")
        ratios = [
            accuracy(m, v) / accuracy(m, reference[t]) for t, (m, v) in values.items() if accuracy(m, reference[t]) > 0
        ]
        return 100.0 * sum(ratios) / len(ratios) if ratios else math.nan
    raise ValueError(f"unknown selection metric {metric!r}; known: {sorted(METRICS)}")


def choose(scores: Sequence[float], metric: str) -> int:
    """Index of the best score (``METRICS[metric]`` says which direction); the first of equals
    wins; NaN never wins unless every score is NaN (an error)."""
    if metric not in METRICS:
        raise ValueError(f"unknown selection metric {metric!r}; known: {sorted(METRICS)}")
    higher = METRICS[metric]
    best = None
    for i, s in enumerate(scores):
        if math.isnan(s):
            continue
        if best is None or (s > scores[best] if higher else s < scores[best]):
            best = i
    if best is None:
        raise ValueError("every grid point has a NaN dev score: nothing to select")
    return best


def decode_dev(
    model,
    processor,
    model_dir: str,
    devsets: Sequence[Mapping[str, Any]],
    decoding: Mapping[str, Any] | None,
    name: str,
    experiment: str,
    progress: bool,
) -> tuple[list[dict], list[dict]]:
    """Decode and score the dev sets with the loaded model (the ``evaluation`` settings in
    ``decoding``; no bootstrap): (hypothesis records, one score record per dev set)."""
    from speechmerge.evaluation.evaluate_model import _evaluate_loaded
    from speechmerge.names import model_dir_of

    dec = dict(decoding or {})
    return _evaluate_loaded(
        model,
        processor,
        model_dir_of(model_dir),
        devsets,
        batch_size=int(dec.get("batch_size", 16)),
        beam_size=int(dec.get("beam_size", 1)),
        max_new_tokens=int(dec.get("max_new_tokens", 128)),
        max_tokens_per_second=dec.get("max_tokens_per_second"),
        on_long_utterance=dec.get("on_long_utterance", "truncate"),
        skip_over_s=dec.get("skip_over_s"),
        model_name=name,
        experiment=experiment,
        n_boot=0,
        seed=0,
        progress=progress,
    )


def default_point_index(points: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]) -> int | None:
    """The grid point at the method's paper defaults (as resolved for the experts), or None."""
    for k, p in enumerate(points):
        if all(_same(v, defaults.get(name)) for name, v in p.items()):
            return k
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def reference_values(expert_scores: Mapping[str, Any], experts: Sequence[str] | None = None) -> dict[str, float]:
    """Dev set -> the experts' primary value, from the experts' dev score file; ``experts``: only
    the records of these models (the experts a merge combines, e.g. those of one training seed).
    Two records for one dev set (experts of several seeds, none named) is an error naming it."""
    records = [r for r in expert_scores["results"] if experts is None or r.get("model") in set(experts)]
    if experts is not None:
        missing = sorted(set(experts) - {r.get("model") for r in records})
        if missing:
            raise ValueError(f"experts' dev scores: no records of {missing}")
    seen: dict[str, str] = {}
    for r in records:
        if r["testset"] in seen:
            raise ValueError(
                f"experts' dev scores: dev set {r['testset']!r} scored for {seen[r['testset']]!r} and "
                f"{r.get('model')!r}; name the merge's experts"
            )
        seen[r["testset"]] = r.get("model")
    return {t: v for t, (_, v) in primary_values(records).items()}


def select_merge(
    *,
    base_weights: str,
    task_vectors: Sequence[str],
    method: str,
    hparams: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    metric: str,
    model_dir: str,
    devsets: Sequence[Mapping[str, Any]],
    out_path: str,
    experiment: str,
    variant: str,
    reference: Mapping[str, float] | None = None,
    seed: int = 0,
    decoding: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Merge every grid point, decode the dev sets with each, write the best point's merged
    weights to ``out_path``; returns the merge info with the dev curve (``selection``)."""
    from speechmerge.evaluation.evaluate_model import load_decoding_model
    from speechmerge.merging.engine import _metadata, output_specs, peak_rss_mb
    from speechmerge.merging.grid import expand_grid, merge_grid, point_weights
    from speechmerge.merging.safetensors_io import Checkpoint, SafetensorsWriter
    from speechmerge.models.loading import load_state_dict_strict
    from speechmerge.utils import atomic_path, provenance

    if metric not in METRICS:
        raise ValueError(f"unknown selection metric {metric!r}; known: {sorted(METRICS)}")
    if metric == "np" and reference is None:
        raise ValueError(f"{variant}: selection metric np needs the experts' dev scores")
    t0 = time.perf_counter()
    points = expand_grid(grid)
    base_sd, deltas, grid_points, info = merge_grid(
        base_weights, task_vectors, method, hparams, points, seed=seed, progress=progress
    )
    log.info("%s: %d grid points from %d merge(s) in %.1f s", variant, len(points), len(deltas), info["merge_wall_s"])
    dec = decoding or {}
    model, processor = load_decoding_model(model_dir, None, dec)
    curve = []
    for k, gp in enumerate(grid_points):
        weights = dict(point_weights(base_sd, deltas[gp.group], gp.scale))
        load_state_dict_strict(model, weights, f"{variant} grid point {gp.hparams}")
        del weights
        _, results = decode_dev(model, processor, model_dir, devsets, decoding, f"{variant} {gp.hparams}",
                                experiment, progress)  # fmt: skip
        score = dev_score(results, metric, reference)
        curve.append(
            {
                "hparams": gp.hparams,
                "score": score,
                "dev": {t: {"metric": m, "value": v} for t, (m, v) in primary_values(results).items()},
            }
        )
        log.info("%s: point %d/%d %s: dev %s = %.3f", variant, k + 1, len(grid_points), gp.hparams, metric, score)
    used = metric
    if all(math.isnan(c["score"]) for c in curve):
        used = "mean_accuracy"
        for c in curve:
            c["score"] = dev_score([{"testset": t, "primary_metric": d["metric"], "metrics": {d["metric"]: d["value"]}}
                                    for t, d in c["dev"].items()], used)  # fmt: skip
        log.warning("%s: %s is undefined at every grid point (reference accuracy 0); choosing by %s", variant,
                    metric, used)  # fmt: skip
    from speechmerge.merging.base import get_method

    paper = get_method(method, dict(hparams)).resolved_hparams(len(task_vectors))
    default_index = default_point_index(points, paper)
    best = choose([c["score"] for c in curve], used)
    chosen = grid_points[best]
    log.info("%s: chose %s (dev %s = %.3f)", variant, chosen.hparams, used, curve[best]["score"])

    final = get_final_hparams(hparams, chosen.hparams)
    prov = provenance()
    base = Checkpoint(base_weights, f"base {base_weights}")
    try:
        specs = output_specs(base.specs, delta_only=False)
    finally:
        base.close()
    meta = _metadata(get_method(method, final), [], seed, False, metadata, prov)
    with atomic_path(out_path) as tmp, SafetensorsWriter(tmp, specs, meta) as writer:
        for key, tensor in point_weights(base_sd, deltas[chosen.group], chosen.scale):
            writer.write(key, tensor.to(specs[key].torch_dtype))
    return {
        "method": method,
        "hparams": final,
        "seed": seed,
        "inputs": [str(p) for p in task_vectors],
        "base": str(base_weights),
        "out_path": str(out_path),
        "n_tensors": len(specs),
        "selection": {
            "split": "dev",
            "metric": used,
            "configured_metric": metric,
            "higher_is_better": METRICS[used],
            "grid": {p: list(v) for p, v in grid.items()},
            "chosen": chosen.hparams,
            "chosen_index": best,
            "default_index": default_index,
            "curve": curve,
            "devsets": [d["testset"] for d in devsets],
            "reference": dict(reference) if reference is not None else None,
            "merges": info["merges"],
            "merge_wall_s": info["merge_wall_s"],
        },
        "wall_s": round(time.perf_counter() - t0, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "provenance": prov,
    }


def get_final_hparams(hparams: Mapping[str, Any], chosen: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters of the written merge: the variant's own, overridden by the chosen point."""
    return {**dict(hparams), **dict(chosen)}


def evaluate_experts_dev(
    model_dir: str,
    weights: Sequence[str],
    experts: Sequence[Mapping[str, Any]],
    devset_paths: Sequence[str],
    *,
    experiment: str,
    decoding: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[list[dict], dict[str, Any]]:
    """Decode each expert (``{"model", "devsets"}``) on its own dev sets with one loaded model
    whose weights are swapped; ``devset_paths`` lists the dev files expert by expert."""
    from speechmerge.evaluation.evaluate_model import load_decoding_model
    from speechmerge.models.loading import load_state_dict_strict, read_state_dict
    from speechmerge.utils import provenance

    n_sets = sum(len(e["devsets"]) for e in experts)
    if len(weights) != len(experts) or len(devset_paths) != n_sets:
        raise ValueError(
            f"{experiment}: {len(weights)} expert weights and {len(devset_paths)} dev files for "
            f"{len(experts)} experts with {n_sets} dev sets"
        )
    dec = decoding or {}
    model, processor = load_decoding_model(model_dir, None, dec)
    records, results, k = [], [], 0
    for expert, w in zip(experts, weights):
        load_state_dict_strict(model, read_state_dict(w), str(w))
        devsets = [{**d, "path": p} for d, p in zip(expert["devsets"], devset_paths[k : k + len(expert["devsets"])])]
        k += len(expert["devsets"])
        recs, res = decode_dev(model, processor, model_dir, devsets, decoding, expert["model"], experiment, progress)
        records += recs
        results += res
    return records, {
        "experiment": experiment,
        "split": "dev",
        "results": results,
        "provenance": provenance(None, model_dir=str(model_dir), weights=[str(w) for w in weights]),
    }
