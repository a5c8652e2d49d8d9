"""Rule finetune: one fine-tuning job (expert, joint, sequential stage or PEFT method).

input.base: the starting model (its config.json, or the directory): the imported base, or the
previous stage's model for sequential training; input.train / input.dev: parquet splits;
output[0] (``model``): the output model directory's config.json (or the directory itself);
params.spec: the job spec from speechmerge.plan (see speechmerge.training.TrainSpec).
"""

from speechmerge.allocator import keep_freed_memory, return_freed_memory
from speechmerge.names import model_dir_of
from speechmerge.training import train
from speechmerge.utils import job_spec, set_threads, setup_script_logging


def as_list(files) -> list[str]:
    """Snakemake gives a single file as a string, several as a list."""
    return [files] if isinstance(files, str) else list(files)


log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821
# reading the splits returns large freed blocks (memory flat in their length); the training
# steps then keep freed memory for reuse (speechmerge.allocator)
return_freed_memory()

spec = job_spec(snakemake)  # noqa: F821
info = train(
    spec,
    model_dir_of(snakemake.input.base),  # noqa: F821
    as_list(snakemake.input.train),  # noqa: F821
    as_list(snakemake.input.dev),  # noqa: F821
    model_dir_of(snakemake.output[0]),  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
    after_loading=lambda: log.info("freed memory kept for reuse: %s", keep_freed_memory()),
)
log.info(
    "job %s/%s: %d steps, best step %s (dev loss %.4f), %.2f samples/s, %d trainable params (%.3f%%)",
    info["experiment"],
    info["job"],
    info["steps"],
    info["best_step"],
    info["best_dev_loss"],
    info["samples_per_s"] or 0.0,
    info["trainable_params"],
    info["trainable_percent"],
)
