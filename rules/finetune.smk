# finetune: experts, the joint and sequential baselines and PEFT methods (one rule, spec from the plan).


rule finetune:
    input:
        base=lambda wc: PLAN.finetune_start(wc.experiment, wc.job),
        train=lambda wc: PLAN.finetune_data(wc.experiment, wc.job, "train"),
        dev=lambda wc: PLAN.finetune_data(wc.experiment, wc.job, "dev"),
    output:
        model=N.MODEL_CONFIG,
        weights=N.MODEL_WEIGHTS,
        info=N.TRAIN_INFO,
        ranks=N.RANK_ALLOCATION,
    log:
        "logs/finetune/{experiment}/{job}.log",
    benchmark:
        "benchmarks/out/finetune/{experiment}/{job}.tsv"
    wildcard_constraints:
        experiment=alternatives(e for (e, _) in PLAN.jobs),
    # Training is most of the run and sequential stages form a chain: start them before any
    # evaluation, so the last minutes are not one lone job on an idle machine.
    priority: 10
    conda:
        CONDA_ENV
    threads: THREADS.get("train", 1)
    resources:
        mem_mb=job_resource("finetune", "mem_mb"),
        runtime=job_resource("finetune", "runtime"),
        gpu=job_resource("finetune", "gpu"),
        gpu_mem_mb=job_resource("finetune", "gpu_mem_mb"),
        gpu_model=job_resource("finetune", "gpu_model"),
    params:
        spec=lambda wc: PLAN.finetune_spec(wc.experiment, wc.job),
    script:
        "../workflow_scripts/finetune.py"
