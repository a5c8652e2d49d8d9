"""How a report's numbers were made, gathered from the files they come from, for every table's
footnote and ``summary.json``: device and CPU code path, training and decoding precision, threads per job,
seeds, encoder context, how hyperparameters were chosen, and library versions.

Nothing here is taken from the machine that writes the report: training facts come from each
job's ``train_info.json``, evaluation facts from the provenance of each score file, so a report
written elsewhere still describes the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from speechmerge.numerics import describe
from speechmerge.utils import read_json

VERSION_KEYS = ("torch", "transformers", "numpy", "sacrebleu", "speechmerge")


def _sorted(values) -> list:
    return sorted({v for v in values if v is not None}, key=str)


def run_provenance(
    spec: Mapping, score_paths: Sequence[str | Path], train_infos: Mapping[str, tuple[str, Mapping]]
) -> dict:
    """What the footnote says, as data. ``train_infos``: job -> (path, parsed train_info)."""
    machines, versions, eval_threads, dtypes = [], {}, [], []
    long_utterances: dict[str, dict] = {}
    bad_audio: dict[str, int] = {}  # test set or training file -> clips left out (data.on_bad_audio: skip)
    for p in score_paths:
        doc = read_json(p)
        _count_long_utterances(doc, long_utterances)
        for r in doc.get("results") or [doc]:
            n = int((r.get("decoding") or {}).get("n_bad_audio_skipped") or 0)
            if n:
                bad_audio[f"test set {r['testset']}"] = n
        dtypes += [(r.get("decoding") or {}).get("dtype") for r in doc.get("results") or [doc]]
        prov = doc.get("provenance") or {}
        m = prov.get("machine")
        if m:
            machines.append(describe(m))
            eval_threads.append(m.get("torch_threads"))
        for k, v in (prov.get("versions") or {}).items():
            if k in VERSION_KEYS:
                versions.setdefault(k, set()).add(v)
    train = [info for _, info in train_infos.values()]
    for info in train:
        for path, n in (info.get("skipped_audio") or {}).items():
            bad_audio[f"training data {'/'.join(Path(path).with_suffix('').parts[-2:])}"] = int(n)
    for info in train:
        m = (info.get("provenance") or {}).get("machine")
        if m:
            machines.append(describe(m))
    return {
        "machines": _sorted(machines),
        "precision": _sorted(i.get("precision") for i in train),
        "decoding_dtype": _sorted(dtypes),
        "train_threads": _sorted(i.get("threads") for i in train),
        "eval_threads": _sorted(eval_threads),
        "seeds": _sorted(i.get("seed") for i in train),
        "run_seed": spec.get("seed"),
        "context_s": spec.get("context_s"),
        "selection": spec.get("selection") or "hyperparameters: the methods' defaults; sweep points evaluated on test",
        "versions": {k: sorted(v) for k, v in sorted(versions.items())},
        # test sets with utterances longer than the encoder context (only when there are any)
        **({"long_utterances": long_utterances} if long_utterances else {}),
        **({"bad_audio_skipped": dict(sorted(bad_audio.items()))} if bad_audio else {}),
        # several training seeds: which, and the seed of the data (and of θ₀)
        **(
            {"training_seeds": list(spec["seeds"]), "data_seed": spec.get("seed")}
            if len(spec.get("seeds") or []) > 1
            else {}
        ),
    }


def _count_long_utterances(doc: Mapping, out: dict[str, dict]) -> None:
    """Add a score file's truncated and skipped utterances to ``out``: test set ->
    {"n", "skipped", "skip_over_s", "truncated": {context_s: count}} (records without any are left out)."""
    for r in doc.get("results") or [doc]:
        dec = r.get("decoding") or {}
        truncated, skipped = int(dec.get("n_truncated") or 0), int(dec.get("n_skipped") or 0)
        if not truncated and not skipped:
            continue
        entry = out.setdefault(r["testset"], {"n": r.get("n"), "skipped": 0, "truncated": {}})
        if skipped:
            entry["skipped"] = max(entry["skipped"], skipped)
            entry["skip_over_s"] = dec.get("skip_over_s")
            entry["n"] = (r.get("n") or 0) + skipped
        if truncated:
            ctx = f"{float(dec.get('context_seconds') or 0):g}"
            entry["truncated"][ctx] = max(entry["truncated"].get(ctx, 0), truncated)


def long_utterance_note(prov: Mapping) -> str | None:
    """The footnote on utterances longer than the encoder context, or None when there are none."""
    found = prov.get("long_utterances") or {}
    truncated = [
        f"{t} {k} of {e['n']} at {ctx} s"
        for t, e in sorted(found.items())
        for ctx, k in sorted(e["truncated"].items(), key=lambda kv: float(kv[0]))
    ]
    skipped = [f"{t} {e['skipped']} of {e['n']}" for t, e in sorted(found.items()) if e["skipped"]]
    parts = []
    if truncated:
        parts.append(
            "Utterances longer than the encoder context were truncated (decoded from their start, scored against "
            "the full reference; evaluation.on_long_utterance: truncate): " + "; ".join(truncated) + "."
        )
    if skipped:
        over = sorted({f"{e.get('skip_over_s'):g}" for e in found.values() if e["skipped"]})
        parts.append(
            f"Utterances longer than {'/'.join(over)} s were left out for every model "
            "(evaluation.on_long_utterance: skip): " + "; ".join(skipped) + "."
        )
    return " ".join(parts) or None


def bad_audio_note(prov: Mapping) -> str | None:
    """The footnote on recorded clips the data jobs left out, or None when none were."""
    found = prov.get("bad_audio_skipped") or {}
    if not found:
        return None
    return (
        "Clips that could not be decoded, were empty or silent were left out (data.on_bad_audio: skip; each "
        "listed in its split's provenance): " + "; ".join(f"{k} {n}" for k, n in found.items()) + "."
    )


def _join(values, unit: str = "") -> str:
    return " / ".join(f"{v}{unit}" for v in values) if values else "?"


def _precision_part(prov: Mapping) -> str:
    """``precision: training bfloat16 (autocast, float32 weights), decoding bfloat16 weights``."""
    train = [f"{p} (autocast, float32 weights)" if p == "bfloat16" else p for p in prov.get("precision") or []]
    parts = [f"training {_join(train)}" if train else "no training"]
    if prov.get("decoding_dtype"):
        parts.append(f"decoding {_join(prov['decoding_dtype'])} weights")
    return "precision: " + ", ".join(parts)


def footnote(prov: Mapping) -> str:
    """One line: made on …, float32 training, threads, seed(s), context, selection, versions."""
    versions = ", ".join(f"{k} {'/'.join(v)}" for k, v in prov.get("versions", {}).items())
    seeds = prov.get("seeds") or []
    training = prov.get("training_seeds") or []
    if len(training) > 1:
        seed_part = (
            f"training seeds {_join(training)} (every trained model and merge once per seed; mean ± sd over "
            f"seeds; data, zero-shot and θ₀ made once, seed {prov.get('data_seed')})"
        )
    elif not seeds:  # nothing trained here (a merge-study's experts)
        seed_part = f"seed {prov.get('run_seed', 0)} (merges and bootstrap)"
    elif len(seeds) <= 1:
        seed_part = f"seed {_join(seeds)} (one training run per model)"
    else:
        seed_part = f"seeds {_join(seeds)}"
    parts = [
        f"Made on: {_join(prov.get('machines'))}",
        _precision_part(prov),
        f"threads per job: training {_join(prov.get('train_threads'))}, evaluation {_join(prov.get('eval_threads'))}"
        if prov.get("train_threads")
        else f"threads per job: evaluation {_join(prov.get('eval_threads'))}",
        seed_part,
        f"encoder context {prov['context_s']} s" if prov.get("context_s") else "encoder context 30 s",
        prov.get("selection", ""),
        versions,
    ]
    return "Provenance — " + "; ".join(p for p in parts if p) + "."
