"""Rule import_model: a model spec (bundle:, random:, hf:) -> a Hugging Face Whisper directory.

params.spec: {"spec": "bundle:whisper-base", "max_seconds": 6 or None, "seed": 0, "config_hash": ...}.
output[0]: the model directory, or a file inside it (rules/models.smk names its config.json;
model.safetensors and import_info.json are written next to it). The directory is replaced
atomically, so a failed import leaves nothing Snakemake would take as done.
"""

from pathlib import Path

from speechmerge.models import import_model
from speechmerge.names import model_dir_of
from speechmerge.utils import job_spec, set_threads, setup_script_logging

log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821

spec = job_spec(snakemake)  # noqa: F821
out_dir = model_dir_of(snakemake.output[0])  # noqa: F821

info = import_model(
    spec["spec"],
    out_dir,
    max_seconds=spec.get("max_seconds"),
    seed=int(spec.get("seed", 0)),
    progress=False,
    extra_info={"config_hash": spec.get("config_hash")},
)
for path in snakemake.output:  # noqa: F821
    if not Path(path).exists():
        raise FileNotFoundError(f"import_model did not produce the declared output {path}")
log.info("%s -> %s: %d parameters, %.1f MB", spec["spec"], out_dir, info["n_params"], info["size_bytes"] / 1e6)
