"""Rule task_vector: τ = θ_job − θ_base (every tensor, float32) as safetensors with metadata.

input.model: the fine-tuned model's model.safetensors (or its directory); input.base: the base
model's model.safetensors (or directory); output[0]: the task vector file;
params.spec: {"experiment", "job", "config_hash"}.
"""

from pathlib import Path

from speechmerge.names import model_dir_of
from speechmerge.training.taskvector import task_vector
from speechmerge.utils import job_spec, provenance, read_json, set_threads, setup_script_logging

log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821

spec = job_spec(snakemake)  # noqa: F821
model = Path(snakemake.input.model)  # noqa: F821
model_dir = model_dir_of(model)
info_path = model_dir / "train_info.json"
train_info = read_json(info_path) if info_path.exists() else {}
metadata = {
    "experiment": spec["experiment"],
    "job": spec["job"],
    "method": train_info.get("method", ""),
    "data": train_info.get("train_files", []),
    "steps": train_info.get("steps", ""),
    "seed": train_info.get("seed", ""),
    "provenance": provenance(spec, job_config_hash=spec.get("config_hash")),
}
summary = task_vector(model, snakemake.input.base, snakemake.output[0], metadata)  # noqa: F821
log.info(
    "task vector %s: %d tensors, %d parameters, ||tau||_2 = %.4f",
    snakemake.output[0],
    summary["tensors"],
    summary["parameters"],
    summary["l2_norm"],
)  # noqa: F821
