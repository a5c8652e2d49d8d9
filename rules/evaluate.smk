# evaluate: decode every test set of one model (zero-shot, a fine-tuned job or a merge) and score it.
# One job per model: the model is loaded once and the Python start-up is paid once.


rule evaluate:
    input:
        model=lambda wc: PLAN.eval_model_config(wc.experiment, wc.model),
        weights=lambda wc: PLAN.weights_path(wc.experiment, wc.model),
        testsets=lambda wc: PLAN.evaluation_files(wc.experiment, wc.model),
    output:
        hyps=N.HYPOTHESES,
        scores=N.SCORES,
    log:
        "logs/evaluate/{experiment}/{model}.log",
    benchmark:
        "benchmarks/out/evaluate/{experiment}/{model}.tsv"
    conda:
        CONDA_ENV
    threads: THREADS.get("evaluate", 1)
    resources:
        mem_mb=job_resource("evaluate", "mem_mb"),
        runtime=job_resource("evaluate", "runtime"),
        gpu=job_resource("evaluate", "gpu"),
        gpu_mem_mb=job_resource("evaluate", "gpu_mem_mb"),
        gpu_model=job_resource("evaluate", "gpu_model"),
    params:
        spec=lambda wc: PLAN.evaluation_spec(wc.experiment, wc.model),
    script:
        "../workflow_scripts/evaluate.py"


# evaluate_experts_dev: every expert of an experiment on its own dev sets, in one process: the
# reference of NP-based dev selection of merges (multilingual).
rule evaluate_experts_dev:
    input:
        unpack(lambda wc: PLAN.experts_dev_inputs(wc.experiment)),
    output:
        hyps=N.EXPERTS_DEV_HYPOTHESES,
        scores=N.EXPERTS_DEV_SCORES,
    log:
        "logs/evaluate_experts_dev/{experiment}.log",
    benchmark:
        "benchmarks/out/evaluate_experts_dev/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: THREADS.get("evaluate", 1)
    resources:
        mem_mb=job_resource("evaluate_experts_dev", "mem_mb"),
        runtime=job_resource("evaluate_experts_dev", "runtime"),
        gpu=job_resource("evaluate_experts_dev", "gpu"),
        gpu_mem_mb=job_resource("evaluate_experts_dev", "gpu_mem_mb"),
        gpu_model=job_resource("evaluate_experts_dev", "gpu_model"),
    params:
        spec=lambda wc: PLAN.experts_dev_spec(wc.experiment),
    script:
        "../workflow_scripts/evaluate_experts_dev.py"
