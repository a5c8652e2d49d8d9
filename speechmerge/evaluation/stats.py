"""Bootstrap confidence intervals and paired significance tests over utterances.

Every corpus metric here is a function of *summed per-utterance sufficient statistics*:

* WER / CER: (edits_i, ref_len_i) -> 100 * sum(edits) / sum(ref_len);
* BLEU: sacrebleu's per-segment (hyp_len, ref_len, matches_1..4, totals_1..4) -> BLEU of the sums;
* chrF: sacrebleu's per-segment character / word n-gram statistics -> chrF of the sums.

So one bootstrap replicate = draw n utterance indices with replacement, sum their statistics and
recompute the corpus score (Efron & Tibshirani 1993; Koehn 2004 for MT). Replicates are drawn as
count vectors (how often each utterance was drawn) and summed with one matrix product, chunk by
chunk, so memory stays ~ chunk x n.

* ``bootstrap_ci``: percentile interval (default 95 %, 1000 replicates, seeded).
* ``bootstrap_mean_scores`` / ``paired_bootstrap_mean``: the same for the unweighted mean of
  a metric over several test sets (e.g. the average WER over languages): utterances are
  resampled within each test set (stratified bootstrap), with an independent stream per set.
* ``paired_bootstrap_scores``: the corpus scores of any number of systems on the same resampled
  utterances (what a statistic of several systems, e.g. normalised performance, is bootstrapped
  from).
* ``paired_bootstrap``: both systems scored on the *same* resampled utterances (Koehn 2004,
  "Statistical significance tests for machine translation evaluation"). Reported:
  ``delta`` = improvement of A over B (B - A for error rates, A - B for BLEU/chrF),
  ``p_value`` = two-sided p of H0 "no difference" with the bootstrap distribution shifted to
  mean 0: (1 + #{|d*_b - mean(d*)| >= |delta|}) / (B + 1) (the form sacrebleu's paired bootstrap
  uses, after Riezler & Maxwell 2005), and ``p_koehn`` = fraction of replicates in which A is not
  better than B (Koehn's one-sided reading), plus a 95 % interval of the delta.
* Several training seeds (``seed_*`` functions): a cell is the mean over seeds of the per-seed
  corpus score, and its bootstrap is two-level: every replicate draws the seeds with
  replacement (``seed_draws``, one draw per replicate shared by every test set and system, so
  a system is paired with itself and with the baseline seed by seed) and resamples the test
  utterances; the replicate is the mean over the drawn seeds of their corpus scores on the
  resampled utterances (``seed_bootstrap_scores``). Every seed is decoded on the same test
  utterances, so one utterance draw serves all drawn seeds of a replicate (seeds and utterances
  are crossed, not nested): drawing them anew per seed would shrink the test-sample part of the
  variance by the number of seeds. With one seed the seed draw is trivial and every replicate,
  interval and p-value is the one-level one, bit for bit.
* ``matched_pairs_test``: a MAPSSWE-style matched-pairs test on error counts (NIST sc_stats;
  Gillick & Cox 1989) with the *utterance* as segment: Z = mean(d) / (sd(d) / sqrt(n)),
  d_i = edits_B,i - edits_A,i, two-sided normal p-value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from speechmerge.evaluation.corpus_metrics import ERROR_METRICS, get_metric  # noqa: F401  (ERROR_METRICS re-exported)


class HypothesesMismatch(ValueError):
    """Two hypothesis sets that cannot be compared (other model, other utterances, other task)."""


@dataclass
class CorpusStats:
    """Per-utterance sufficient statistics of one metric on one system's hypotheses."""

    metric: str
    ids: list[str]
    stats: np.ndarray  # [n, k]
    score_fn: Callable[[np.ndarray], np.ndarray]  # summed stats [B, k] -> scores [B]

    @property
    def higher_is_better(self) -> bool:
        return get_metric(self.metric).higher_is_better

    def score(self) -> float:
        return float(self.score_fn(self.stats.sum(axis=0, keepdims=True).astype(np.float64))[0])

    def __len__(self) -> int:
        return len(self.ids)


def corpus_stats(records: Sequence[Mapping], metric: str, *, spelling_source=None) -> CorpusStats:
    """Sufficient statistics of ``metric`` (wer, cer, bleu, chrf) from hypothesis records
    (dicts with id, language, reference, hypothesis; BLEU/chrF target English)."""
    stats, score_fn = get_metric(metric).sufficient_stats(records, spelling_source=spelling_source)
    return CorpusStats(metric, [str(r["id"]) for r in records], stats, score_fn)


def _resampled_sums(stats: np.ndarray, n_boot: int, seed: int, chunk_cells: int = 2_000_000):
    """Yield [chunk, k] sums of the stats over bootstrap replicates (count-vector trick)."""
    n = stats.shape[0]
    if n == 0:
        raise ValueError("cannot bootstrap zero utterances")
    rng = np.random.default_rng(seed)
    s = stats.astype(np.float64)
    chunk = max(1, min(n_boot, chunk_cells // n))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = idx + (np.arange(b)[:, None] * n)
        counts = np.bincount(flat.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        yield counts @ s
        done += b


def bootstrap_scores(cs: CorpusStats, *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Corpus scores of ``n_boot`` bootstrap replicates (resampling utterances)."""
    return np.concatenate([cs.score_fn(s) for s in _resampled_sums(cs.stats, n_boot, seed)])


def bootstrap_ci(cs: CorpusStats, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the corpus score."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return percentile_interval(bootstrap_scores(cs, n_boot=n_boot, seed=seed), level)


def check_paired(a: Sequence[Mapping], b: Sequence[Mapping], *, what_a: str = "A", what_b: str = "B"):
    """Order ``b`` like ``a`` by id; raise ``HypothesesMismatch`` unless both cover exactly the
    same utterances with the same references, task and language."""

    def index(recs, what):
        out = {}
        for r in recs:
            if r["id"] in out:
                raise HypothesesMismatch(f"{what}: utterance id {r['id']!r} appears twice")
            out[r["id"]] = r
        return out

    ia, ib = index(a, what_a), index(b, what_b)
    only_a, only_b = sorted(set(ia) - set(ib)), sorted(set(ib) - set(ia))
    if only_a or only_b:
        raise HypothesesMismatch(
            f"{what_a} and {what_b} cover different utterances: {len(only_a)} only in {what_a} "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in {what_b} (e.g. {only_b[:3]})"
        )
    for k, ra in ia.items():
        rb = ib[k]
        for field in ("reference", "task", "language"):
            if field in ra and field in rb and ra[field] != rb[field]:
                raise HypothesesMismatch(
                    f"utterance {k!r}: {field} differs between {what_a} ({ra[field]!r}) and "
                    f"{what_b} ({rb[field]!r}); not the same test set"
                )
    return list(a), [ib[r["id"]] for r in a]


def _check_aligned(a: CorpusStats, b: CorpusStats) -> None:
    if a.metric != b.metric:
        raise HypothesesMismatch(f"different metrics: {a.metric} vs {b.metric}")
    if a.ids != b.ids:
        raise HypothesesMismatch("systems are not aligned on the same utterance ids (use check_paired)")


def stratum_seed(seed: int, j: int) -> int:
    """Independent stream per test set j of a stratified bootstrap (j = 0 keeps ``seed``)."""
    return seed if j == 0 else int(np.random.SeedSequence([seed, j]).generate_state(1)[0])


def bootstrap_mean_scores(sets: Sequence[CorpusStats], *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Replicates of the unweighted mean of corpus scores over several test sets, resampling
    utterances within each test set independently (stratified bootstrap)."""
    if not sets:
        raise ValueError("no test sets to average")
    cols = [bootstrap_scores(cs, n_boot=n_boot, seed=stratum_seed(seed, j)) for j, cs in enumerate(sets)]
    return np.mean(np.stack(cols, axis=1), axis=1)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(replicates, dtype=np.float64), [a, 1.0 - a])
    return float(lo), float(hi)


def _as_seeds(x: CorpusStats | Sequence[CorpusStats]) -> list[CorpusStats]:
    return [x] if isinstance(x, CorpusStats) else list(x)


def paired_bootstrap_mean(
    a_sets: Sequence[CorpusStats | Sequence[CorpusStats]],
    b_sets: Sequence[CorpusStats | Sequence[CorpusStats]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Paired bootstrap of the difference of *mean* corpus scores over several test sets.

    Test set j is resampled with its own stream, and A and B use the same utterance indices
    within it; delta* = mean_j score_A,j* - mean_j score_B,j* (sign so that > 0 = A better).
    With one test set this is ``paired_bootstrap``.

    An item of ``a_sets`` / ``b_sets`` may also be the list of a system's per-seed statistics
    on that test set (one entry: a model trained once, e.g. zero-shot): the scores are then
    means over seeds and each replicate also resamples the seeds, A's and B's seed k drawn
    together (``seed_bootstrap_scores``).
    """
    a_sets = [_as_seeds(x) for x in a_sets]
    b_sets = [_as_seeds(y) for y in b_sets]
    if len(a_sets) != len(b_sets) or not a_sets:
        raise ValueError(f"need the same non-zero number of test sets, got {len(a_sets)} and {len(b_sets)}")
    first = a_sets[0][0]
    metric = first.metric
    for xs, ys in zip(a_sets, b_sets):
        for x in xs[1:] + ys:
            _check_aligned(xs[0], x)
        if xs[0].higher_is_better != first.higher_is_better:
            raise ValueError(f"cannot average metrics of opposite direction ({metric}, {xs[0].metric})")
    if len({xs[0].metric for xs in a_sets}) > 1:
        metric = "+".join(sorted({xs[0].metric for xs in a_sets}))
    sign = 1.0 if first.higher_is_better else -1.0
    n_seeds = max(len(x) for x in a_sets + b_sets)
    draws = seed_draws(n_seeds, n_boot, seed)
    deltas = np.zeros(n_boot)
    for j, (xs, ys) in enumerate(zip(a_sets, b_sets)):
        reps = seed_bootstrap_scores([xs, ys], n_boot=n_boot, seed=stratum_seed(seed, j), draws=draws)
        deltas += reps[:, 0] - reps[:, 1]
    deltas *= sign / len(a_sets)
    score_a = float(np.mean([seed_mean_score(xs) for xs in a_sets]))
    score_b = float(np.mean([seed_mean_score(ys) for ys in b_sets]))
    observed = sign * (score_a - score_b)
    centred = np.abs(deltas - deltas.mean())
    p_two = (1.0 + float(np.sum(centred >= abs(observed) - 1e-12))) / (n_boot + 1.0)
    lo, hi = percentile_interval(deltas, level)
    return {
        "metric": metric,
        "score_a": score_a,
        "score_b": score_b,
        "delta": observed,
        "delta_ci": [lo, hi],
        "p_value": min(1.0, p_two),
        "p_koehn": float(np.mean(deltas <= 0.0)),
        "n": int(sum(len(xs[0]) for xs in a_sets)),
        "n_sets": len(a_sets),
        "n_seeds": n_seeds,
        "n_boot": n_boot,
        "seed": seed,
        "test": "paired bootstrap (Koehn 2004), two-sided p with shifted null"
        + (", stratified by test set" if len(a_sets) > 1 else "")
        + (f", seeds resampled ({n_seeds})" if n_seeds > 1 else ""),
    }


def paired_bootstrap_scores(systems: Sequence[CorpusStats], *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """[n_boot, len(systems)]: the corpus score of every system on the same ``n_boot`` resamples
    of the utterances (one test set; the systems aligned on the same ids)."""
    if not systems:
        raise ValueError("no systems to bootstrap")
    for x in systems[1:]:
        if x.ids != systems[0].ids:
            raise HypothesesMismatch("systems are not aligned on the same utterance ids (use check_paired)")
    widths = [x.stats.shape[1] for x in systems]
    edges = np.cumsum([0] + widths)
    both = np.concatenate([x.stats for x in systems], axis=1)
    out = []
    for s in _resampled_sums(both, n_boot, seed):
        out.append(np.stack([x.score_fn(s[:, a:b]) for x, a, b in zip(systems, edges[:-1], edges[1:])], axis=1))
    return np.concatenate(out, axis=0)


# ----- several training seeds -------------------------------------------------------------
def seed_draws(n_seeds: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """[n_boot, n_seeds] seed indices drawn with replacement, one row per replicate (its own
    stream, derived from ``seed``); with one seed all zeros, no random numbers drawn."""
    if n_seeds < 1:
        raise ValueError(f"need at least one seed, got {n_seeds}")
    if n_seeds == 1:
        return np.zeros((n_boot, 1), dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, SEED_STREAM]))
    return rng.integers(0, n_seeds, size=(n_boot, n_seeds))


SEED_STREAM = 0x5EED  # the stream of the seed draws, apart from the utterance streams


def seed_mean(scores: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """[B]: the mean of each replicate's drawn seeds; ``scores`` [B, S] = every seed's score in
    every replicate, ``draws`` [B, S] (``seed_draws``). A system with one seed ([B, 1]) keeps
    its scores whatever the draws (a model trained once is the same for every seed)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[1] == 1:
        return scores[:, 0]
    if scores.shape[1] != draws.shape[1]:
        raise ValueError(f"scores of {scores.shape[1]} seeds, draws of {draws.shape[1]}")
    return np.take_along_axis(scores, draws, axis=1).mean(axis=1)


def seed_mean_score(seeds: Sequence[CorpusStats]) -> float:
    """Mean over seeds of the corpus score (the value a seeded cell shows)."""
    return float(np.mean([cs.score() for cs in seeds]))


def seed_sd(values: Sequence[float]) -> float | None:
    """Across-seed standard deviation (n − 1 in the denominator); None for fewer than 2 seeds."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1)) if v.size > 1 else None


def seed_bootstrap_scores(
    systems: Sequence[Sequence[CorpusStats]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    draws: np.ndarray | None = None,
) -> np.ndarray:
    """[n_boot, len(systems)]: replicates of every system's mean-over-seeds corpus score on one
    test set. ``systems[i]``: system i's per-seed statistics (1 entry, or one per seed, all on
    the same utterance ids). Replicate b resamples the utterances once (stream ``seed``, as
    ``bootstrap_scores``) for every seed and system, and averages the seeds ``draws[b]``
    (default: ``seed_draws`` from ``seed``; pass the same draws to every test set of a mean)."""
    if not systems or any(not s for s in systems):
        raise ValueError("need at least one system with at least one seed")
    flat = [cs for s in systems for cs in s]
    for x in flat[1:]:
        if x.ids != flat[0].ids:
            raise HypothesesMismatch("seeds or systems are not aligned on the same utterance ids (use check_paired)")
    n_seeds = max(len(s) for s in systems)
    if any(len(s) not in (1, n_seeds) for s in systems):
        raise ValueError(f"systems with {sorted({len(s) for s in systems})} seeds: need 1 or {n_seeds} each")
    if draws is None:
        draws = seed_draws(n_seeds, n_boot, seed)
    per_flat = paired_bootstrap_scores(flat, n_boot=n_boot, seed=seed)  # [B, all seeds of all systems]
    out, k = [], 0
    for s in systems:
        out.append(seed_mean(per_flat[:, k : k + len(s)], draws))
        k += len(s)
    return np.stack(out, axis=1)


def seed_bootstrap_ci(
    seeds: Sequence[CorpusStats], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean over seeds of one test set's corpus score (seeds and
    utterances resampled); with one seed ``bootstrap_ci``."""
    return percentile_interval(seed_bootstrap_scores([seeds], n_boot=n_boot, seed=seed)[:, 0], level)


def seed_bootstrap_mean_scores(
    sets: Sequence[Sequence[CorpusStats]], *, n_boot: int = 1000, seed: int = 0
) -> np.ndarray:
    """Replicates of the unweighted mean over test sets of the mean-over-seeds score: the seeds
    drawn once per replicate for every test set, utterances within each test set (stream
    ``stratum_seed(seed, j)``); with one seed ``bootstrap_mean_scores``."""
    if not sets:
        raise ValueError("no test sets to average")
    draws = seed_draws(max(len(s) for s in sets), n_boot, seed)
    cols = [
        seed_bootstrap_scores([s], n_boot=n_boot, seed=stratum_seed(seed, j), draws=draws)[:, 0]
        for j, s in enumerate(sets)
    ]
    return np.mean(np.stack(cols, axis=1), axis=1)


def paired_bootstrap(a: CorpusStats, b: CorpusStats, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Paired bootstrap resampling test of system A against system B (same utterances)."""
    _check_aligned(a, b)
    return paired_bootstrap_mean([a], [b], n_boot=n_boot, seed=seed, level=level)


def matched_pairs_test(a: CorpusStats, b: CorpusStats) -> dict:
    """MAPSSWE-style matched-pairs Z test on per-utterance edit counts (error metrics only)."""
    from scipy.stats import norm

    if a.metric not in ERROR_METRICS or b.metric != a.metric:
        raise ValueError(f"matched-pairs test needs one error metric for both systems, got {a.metric}/{b.metric}")
    _check_aligned(a, b)
    d = (b.stats[:, 0] - a.stats[:, 0]).astype(np.float64)  # > 0: A makes fewer errors
    n = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if sd == 0.0:
        z = 0.0 if mean == 0.0 else float(np.sign(mean) * np.inf)
        p = 1.0 if mean == 0.0 else 0.0
    else:
        z = mean / (sd / np.sqrt(n))
        p = float(2.0 * norm.sf(abs(z)))
    return {
        "metric": a.metric,
        "mean_diff": mean,
        "z": float(z),
        "p_value": p,
        "n": n,
        "test": "matched pairs (MAPSSWE-style, utterance segments), two-sided normal",
    }
