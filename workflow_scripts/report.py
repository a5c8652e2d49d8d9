"""Rule report: the experiment's tables (CSV, Markdown, LaTeX) and figures into output.dir.

input: scores (.json), hyps (.jsonl), train_infos, rank_allocations, taskvectors (lists, the
last three may be empty); params.spec: the report spec built by speechmerge.plan.
"""

from speechmerge.report import write_report
from speechmerge.utils import job_spec, set_threads, setup_script_logging

log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821

spec = job_spec(snakemake)  # noqa: F821
inp = snakemake.input  # noqa: F821


def files(name):
    return list(getattr(inp, name, []) or [])


summary = write_report(
    spec,
    snakemake.output.dir,  # noqa: F821
    scores=files("scores"),
    hyps=files("hyps"),
    train_infos=files("train_infos"),
    rank_allocations=files("rank_allocations"),
    taskvectors=files("taskvectors"),
    cosines=files("cosines"),
    merge_infos=files("merge_infos"),
    n_boot=int(spec.get("bootstrap", 1000)),
    seed=int(spec.get("seed", 0)),
)
if summary["missing"]:
    log.warning(
        "report %s: %d missing cells: %s",
        spec["experiment"],
        len(summary["missing"]),
        ", ".join(summary["missing"][:10]),
    )
log.info("report %s: %d files", spec["experiment"], len(summary["files"]))
