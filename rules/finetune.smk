# finetune: experts, the joint and sequential baselines and PEFT methods (one rule, spec from the plan).


def _finetune_spec(wc):
    spec = dict(PLAN.jobs[(wc.experiment, wc.job)])
    for key in ("train", "dev", "init"):
        spec.pop(key)
    return spec


rule finetune:
    input:
        base=lambda wc: job_model_file(wc.experiment, PLAN.jobs[(wc.experiment, wc.job)]["init"]),
        train=lambda wc: dataset_files(PLAN.jobs[(wc.experiment, wc.job)]["train"]),
        dev=lambda wc: dataset_files(PLAN.jobs[(wc.experiment, wc.job)]["dev"]),
    output:
        model="results/models/{experiment}/{job}/config.json",
        weights="results/models/{experiment}/{job}/model.safetensors",
        info="results/models/{experiment}/{job}/train_info.json",
        ranks="results/models/{experiment}/{job}/rank_allocation.json",
    params:
        spec=_finetune_spec,
    threads: THREADS.get("train", 1)
    # Training is most of the run and sequential stages form a chain: start them before any
    # evaluation, so the last minutes are not one lone job on an idle machine.
    priority: 10
    log:
        "logs/finetune/{experiment}/{job}.log",
    benchmark:
        "benchmarks/out/finetune/{experiment}/{job}.tsv"
    resources:
        mem_mb=6000,
        runtime=120,
    script:
        "../workflow_scripts/finetune.py"
