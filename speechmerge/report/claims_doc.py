"""``docs/claims.md``, generated from the claims of every experiment kind (``ClaimDef`` in
``speechmerge/experiments/<kind>.py``, with each kind's ``claims_quantity`` and ``claims_doc``)
and the fixed sections below on how effects, intervals, p-values and verdicts are computed.

    python -m speechmerge.report.claims_doc            # rewrites docs/claims.md
    python -m speechmerge.report.claims_doc --check    # exit 1 if it differs

``tests/test_claims.py`` keeps the file equal to what this module writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

INTRO = '# Claims tables\n\nEvery report (`results/report/<experiment>/`) holds `claims.csv` and `claims.md`: the headline\nclaims of the paper the experiment stands in for, each tested on this run\'s results, with an\neffect size, its 95 % confidence interval, a p-value, the number of utterances behind it and a\nverdict — **reproduced**, **contradicted**, **inconclusive** (the interval cannot decide at this\nscale), or **not run** (the rows the claim needs are not in the config, or their scores are\nmissing; the note says which). The same table is in the report\'s `README.md` and, as numbers, in\n`summary.json` (`"claims"`). The code is `speechmerge/report/claims/`; each claim is one\ndeclarative `ClaimDef` (which rows, which quantity, which effect, which test, which margin) in\nthe module of its experiment kind (`speechmerge/experiments/<kind>.py`). This file is generated\nfrom them: `python -m speechmerge.report.claims_doc` (a test keeps the two equal).\n\nThe claims are stated in this repository\'s words; the source of each is the abstract of the\npaper named in its row.\n\n## Columns\n\n| column | meaning |\n|---|---|\n| `id` | stable name of the claim (`lors-vs-ties`, `boosted-matches-fullft-id`, …) |\n| `paper`, `arxiv` | the paper whose claim it is, and its arXiv id |\n| `claim` | the claim, in our words |\n| `comparison` | A vs B: the rows of the main table compared (their labels) |\n| `metric` | the quantity compared and the unit of the effect ("points", or "% of B") |\n| `test`, `margin` | the kind of test (below) and its margin or threshold |\n| `effect` | oriented so that a positive value goes the claim\'s way |\n| `ci_lo`, `ci_hi` | 95 % percentile bootstrap interval of the effect |\n| `p_value` | p of the test\'s null hypothesis (below) |\n| `n`, `n_unit` | utterances behind the effect (all test sets of the quantity), or modules |\n| `verdict`, `note` | the verdict and what qualifies it |\n\n## The claims\n\n'

METHOD = "## How effects, intervals, p-values and verdicts are computed\n\n**Bootstrap over test utterances.** Every test set is resampled on its own (utterance indices\ndrawn with replacement, as many as the set holds), with its own seeded stream, and the same\nindices are used for every model on that test set (a paired bootstrap). In each replicate the\ncorpus-level WER, CER or BLEU of every model is recomputed from the summed per-utterance\nstatistics (`speechmerge.evaluation.stats`), then the claim's quantity (mean over test sets, NP\nagainst the experts, best of a group) and its effect. The number of replicates and the seed are\nthose of the report (`n_boot`, `seed` of `write_report`), so the table is the same on every run.\nThe observed effect is computed from the score files; the interval is the 2.5th–97.5th\npercentile of the replicates.\n\n**Several training seeds** (config `seeds`): a row's score on a test set is the mean over its\nseeds, and each replicate first draws the seeds with replacement — one draw per replicate,\nshared by every row and test set, so that A's seed k is compared with B's seed k and a\nseed-independent row (zero-shot, θ₀) is the same model for every seed — then resamples the\nutterances once for all drawn seeds, since every seed decodes the same test utterances\n(`stats.seed_bootstrap_scores`). The interval then covers the spread over training runs as well\nas the test sample; with two or three seeds that part is rough.\n\n**p-values** come from the replicates shifted to the null hypothesis (as the tables'\nsignificance tests do): A > B and ρ > 0, two-sided, H0 effect = 0; non-inferior with margin m,\none-sided, H0 effect ≤ −m; > t, one-sided, H0 effect ≤ t; equivalent within ±m, two one-sided\ntests (H0 effect ≤ −m, H0 effect ≥ m), the larger p.\n\n**Verdicts** are read off the 95 % interval (`claims.verdict`):\n\n| test | reproduced | contradicted | otherwise |\n|---|---|---|---|\n| A > B (and ρ > 0) | CI above 0 | CI below 0 | inconclusive |\n| non-inferior, margin m | CI lower end > −m | CI upper end < −m | inconclusive |\n| equivalent within ±m | CI inside (−m, m) | CI wholly outside it | inconclusive |\n| > t | CI lower end > t | CI upper end < t | inconclusive |\n| ≤ t (counts, no CI) | value ≤ t | value > t | — |\n\nA two-sided 95 % interval makes the one-sided decisions (non-inferiority, threshold) tests at\n2.5 %, and the equivalence decision two one-sided tests at 2.5 % each — stricter than the common\n90 % interval for equivalence. Without hypotheses (only score files) the effect is shown but the\nverdict is inconclusive; when NP or a relative effect is undefined (a zero baseline), too.\n\n**What the interval does not cover.** With one seed each model is trained once, and the test\nsentences are a fixed sample of the corpus: the interval is the variation over test utterances\nonly, not over training runs, synthetic voices or hyperparameter choices. With several seeds it\nalso covers training runs, except θ₀'s (trained once). The note of each bootstrapped claim says\nwhich.\n\n## What the default (laptop) scale can and cannot decide\n\nThe default run (`config.yaml`) tests on 12–30 utterances per test set: 16 per language and task\nin `multilingual` (160 hypotheses of 80 utterances behind NP All), 12 per domain in `domains`\n(60 in-domain, 24 out of domain, 12 English), 30 per test set in `peft`. The corpus holds 70\ntest sentences per language; the sizes are what the 45-minute budget of the default run allows\n(every model decodes every test set, and the zero-shot row at 30 s costs about six times as much\nas one at the crop). With so few utterances:\n\n* only large differences between models are decided. A verdict of \"reproduced\" or\n  \"contradicted\" needs the whole 95 % interval on one side, and on 10 utterances of a few words\n  a handful of words changes a WER by several points;\n* the margin claims (non-inferiority, equivalence with 10 % margins) need an interval narrower\n  than a tenth of the baseline's error rate; at this size they are expected to come out\n  inconclusive unless two models make nearly the same errors;\n* the percentile bootstrap tends to be too narrow for samples this small, so a verdict that\n  only just clears its bound deserves the same caution as a p-value near 0.05;\n* the parameter-count claim is exact at any scale, and the rank-allocation claim depends on the\n  number of adapted modules, not on the test sets;\n* whatever the verdicts, they are about Whisper base, synthetic eSpeak speech and tens of\n  training steps with a cropped encoder context — evidence about this pipeline's stand-in for\n  each paper, not about the papers' models and data. The paper presets\n  (`presets/paper-*.yaml`) give test sets large enough for the intervals to narrow.\n\nThe smoke preset (`presets/smoke.yaml`) uses a random tiny model and three utterances per test\nset: its claims tables only check that every claim is evaluated; their verdicts mean nothing.\n"


def kind_section(kind) -> str:
    """The section of one kind: its paper, what it compares, one table row per claim, the notes."""
    from speechmerge.report.claims import test_label

    lines = [f"### {kind.paper} — experiment kind `{kind.name}`", "", kind.claims_quantity, ""]
    lines += ["| id | claim | A vs B | effect | test |", "|---|---|---|---|---|"]
    for c in kind.claims:
        test = test_label(c.test, c.margin) + (" (A worse)" if c.direction == "worse" else "")
        cells = [f"`{c.doc_id or c.id}`", c.doc_claim or c.claim, c.doc_comparison, c.doc_effect, test]
        lines.append("| " + " | ".join(cells) + " |")
    if kind.claims_doc:
        lines += ["", kind.claims_doc]
    return "\n".join(lines) + "\n"


def render() -> str:
    from speechmerge.experiments import all_kinds

    sections = [kind_section(k) for k in all_kinds() if k.claims]
    return INTRO + "\n".join(sections) + "\n" + METHOD


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="write docs/claims.md from the experiment kinds' claims")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "docs" / "claims.md"))
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    args = p.parse_args(argv)
    text, out = render(), Path(args.out)
    if args.check:
        same = out.exists() and out.read_text() == text
        print(f"{out}: {'up to date' if same else 'differs; run python -m speechmerge.report.claims_doc'}")
        return 0 if same else 1
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
