"""Rule evaluate: decode and score every test set of one model (the model is loaded once).

input.model: the base model's config.json (its directory gives config, tokenizer, processor);
input.weights: safetensors full state dict; input.testsets: parquet files, in the order of
params.spec["testsets"] ({"testset", "subset", "task", "language"}).
output.hyps: JSONL of all test sets; output.scores: {"model", "experiment", "results": [...]}.
"""

from speechmerge.allocator import keep_freed_memory
from speechmerge.evaluation import evaluate_testsets, write_hypotheses
from speechmerge.utils import job_spec, set_threads, setup_script_logging, write_json

log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821
log.info("freed memory kept for reuse: %s", keep_freed_memory())

spec = job_spec(snakemake)  # noqa: F821
paths = list(snakemake.input.testsets)  # noqa: F821
if len(paths) != len(spec["testsets"]):
    raise ValueError(f"{len(paths)} test set files but {len(spec['testsets'])} test sets in params.spec")
testsets = [{**t, "path": p} for t, p in zip(spec["testsets"], paths)]

records, scores = evaluate_testsets(
    snakemake.input.model,  # noqa: F821
    snakemake.input.weights,  # noqa: F821
    testsets,
    model_name=spec["model"],
    experiment=spec["experiment"],
    batch_size=int(spec.get("batch_size", 16)),
    beam_size=int(spec.get("beam_size", 1)),
    max_new_tokens=int(spec.get("max_new_tokens", 128)),
    n_boot=int(spec.get("bootstrap", 1000)),
    seed=int(spec.get("seed", 0)),
    config_hash=spec.get("config_hash"),
    max_tokens_per_second=spec.get("max_tokens_per_second"),
    dtype=spec.get("dtype", "float32"),
    on_long_utterance=spec.get("on_long_utterance", "truncate"),
    skip_over_s=spec.get("skip_over_s"),
    device=spec.get("device"),
    jobs_per_gpu=int(spec.get("jobs_per_gpu", 1)),
    progress=True,
)
write_hypotheses(records, snakemake.output.hyps)  # noqa: F821
write_json(snakemake.output.scores, scores)  # noqa: F821
log.info("wrote %d hypotheses and %d score records", len(records), len(scores["results"]))
