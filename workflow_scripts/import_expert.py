"""Rule import_expert: an expert fine-tuned elsewhere -> a model folder of the study's base.

input.base: the base's config.json (its folder gives the architecture, tokenizer and weights);
params.spec: {"experiment", "job", "name", "path", "language", "task", "max_seconds"};
output: the expert folder's config.json, model.safetensors and expert_info.json.
"""

from speechmerge.models.experts import import_expert
from speechmerge.names import model_dir_of
from speechmerge.utils import job_spec, set_threads, setup_script_logging

log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821

spec = job_spec(snakemake)  # noqa: F821
info = import_expert(
    spec["path"],
    model_dir_of(snakemake.input.base),  # noqa: F821
    model_dir_of(snakemake.output.model),  # noqa: F821
    name=spec["name"],
)
log.info("expert %s from %s (%s)", spec["name"], spec["path"], info["format"])
