"""Rule taskvector_cosines: pairwise cosines of the experts' task vectors from the base and from θ₀.

input.base: the imported base's weights; input.theta0: θ₀'s weights (the base itself without a
context-adapted base); input.experts: the experts' weights in the order of params.spec["experts"];
output[0]: JSON (speechmerge.training.cosines.taskvector_cosines) with provenance.
"""

from speechmerge.training.cosines import taskvector_cosines
from speechmerge.utils import job_spec, provenance, set_threads, setup_script_logging, write_json

log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821

spec = job_spec(snakemake)  # noqa: F821
experts = dict(zip(spec["experts"], list(snakemake.input.experts)))  # noqa: F821
result = taskvector_cosines(snakemake.input.base, snakemake.input.theta0, experts)  # noqa: F821
result["provenance"] = provenance(config_hash=spec.get("config_hash"))
write_json(snakemake.output[0], result)  # noqa: F821
log.info(
    "%s: mean inter-expert cosine %.3f from the base, %.3f from θ₀",
    spec["experiment"],
    result["from_base"]["all"]["mean"],
    result["from_theta0"]["all"]["mean"],
)
