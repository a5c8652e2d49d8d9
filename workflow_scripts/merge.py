"""Rule merge: one method with its hyperparameters over an experiment's task vectors.

input.base: the base model's model.safetensors (or its directory); input.task_vectors: one file
per expert, in spec["experts"] order; output.weights: merged θ (safetensors, base dtype);
output.info: JSON (method, hparams, experts, variant, seed, wall time, peak RSS, provenance);
params.spec: {"method", "hparams", "seed", "experts", "variant", "config_hash"}.
"""

from speechmerge.merging import get_method
from speechmerge.merging.engine import merge_files, peak_rss_mb
from speechmerge.utils import job_spec, provenance, set_threads, setup_script_logging, write_json

log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821

spec = job_spec(snakemake)  # noqa: F821
task_vectors = list(snakemake.input.task_vectors)  # noqa: F821
experts = list(spec["experts"])
if len(experts) != len(task_vectors):
    raise ValueError(f"merge {spec['variant']}: {len(task_vectors)} task vectors for experts {experts}")
method = get_method(spec["method"], spec.get("hparams") or {})
log.info("merge %s: %r over %s", spec["variant"], method, experts)

prov = provenance(config_hash=spec.get("config_hash"))
info = merge_files(
    snakemake.input.base,  # noqa: F821
    task_vectors,
    method,
    snakemake.output.weights,  # noqa: F821
    seed=int(spec.get("seed", 0)),
    metadata={"experts": experts, "variant": spec["variant"], "provenance": prov},
)
info.update(
    variant=spec["variant"],
    experts=experts,
    peak_rss_mb=round(peak_rss_mb(), 1),
    provenance=prov,
)
write_json(snakemake.output.info, info)  # noqa: F821
log.info("merged %d tensors in %.1f s, peak RSS %.0f MB", info["n_tensors"], info["wall_s"], info["peak_rss_mb"])
