"""The claims table of a report: each headline claim of the experiment's paper, tested on our
results, with its effect size, 95 % CI, p-value and a verdict.

A claim is a small declarative ``ClaimDef`` (each experiment kind lists its paper's in its
module, ``speechmerge.experiments``): which rows it compares (``Side``: by
method, model or label; the best of a group), on which quantity (``QUANTITIES``: normalised
performance, the mean error rate over the in-domain, out-of-domain, English or cross-domain test
sets, trainable parameters, rank allocations), how the effect is measured (difference in points
or relative to the second side, oriented so that a positive effect goes the claim's way) and
the kind of test. ``evaluate_claims`` resolves the claims of a report spec's kind against its
rows and evaluates them on a ``ResultStore``; a claim whose rows are not in the config is
"not run", with the reason.

Effects of scores are bootstrapped over test utterances: every test set is resampled with its
own seeded stream (``stats.stratum_seed``), the same utterance indices for every model, and the
corpus-level metrics and the quantity (mean, NP) are recomputed per replicate; the best of a
group is chosen again in every replicate. With several training seeds a row's value is the mean
over its seeds, and every replicate also draws the seeds with replacement (the same draw for
every row and test set, so rows are paired seed by seed: ``stats.seed_bootstrap_scores``). The
verdict rules are ``verdict``; how p-values are
computed is ``bootstrap_p``. docs/claims.md states every claim, its source and its margin.
"""

from speechmerge.report.claims.definitions import (
    CSV_FIELDS,
    QUANTITIES,
    TESTS,
    VERDICTS,
    ClaimDef,
    ClaimResult,
    Side,
    Source,
    bootstrap_p,
    claims_for,
    verdict,
)
from speechmerge.report.claims.evaluation import evaluate_claims, resolve
from speechmerge.report.claims.ranks import aligned_ranks, spearman_test
from speechmerge.report.claims.render import test_label, to_csv, to_markdown

__all__ = [
    "CSV_FIELDS",
    "QUANTITIES",
    "TESTS",
    "VERDICTS",
    "ClaimDef",
    "ClaimResult",
    "Side",
    "Source",
    "aligned_ranks",
    "bootstrap_p",
    "claims_for",
    "evaluate_claims",
    "resolve",
    "spearman_test",
    "test_label",
    "to_csv",
    "to_markdown",
    "verdict",
]
