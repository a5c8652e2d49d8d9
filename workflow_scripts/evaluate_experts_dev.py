"""Rule evaluate_experts_dev: every expert of an experiment decoded on its own dev sets in one
process (the reference of NP-based dev selection).

input.weights: each expert's model.safetensors (spec["experts"] order); input.devsets: the dev
splits, expert by expert in spec order; input.model: the architecture's config.json.
output.hyps: JSONL; output.scores: {"experiment", "split": "dev", "results": [...]}.
"""

from speechmerge.allocator import keep_freed_memory
from speechmerge.evaluation import write_hypotheses
from speechmerge.evaluation.selection import evaluate_experts_dev
from speechmerge.utils import job_spec, set_threads, setup_script_logging, write_json

log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821
log.info("freed memory kept for reuse: %s", keep_freed_memory())

spec = job_spec(snakemake)  # noqa: F821
inp = snakemake.input  # noqa: F821
records, scores = evaluate_experts_dev(
    inp.model, list(inp.weights), spec["experts"], list(inp.devsets), experiment=spec["experiment"], decoding=spec
)
write_hypotheses(records, snakemake.output.hyps)  # noqa: F821
write_json(snakemake.output.scores, scores)  # noqa: F821
log.info("wrote %d hypotheses and %d dev score records", len(records), len(scores["results"]))
