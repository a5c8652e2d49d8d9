# merge: one method with its hyperparameters over an experiment's task vectors -> merged weights.


def _merged_weights(path):
    return path if config.get("keep_merged_models", False) else temp(path)


rule merge:
    input:
        base=base_files()["weights"],
        task_vectors=lambda wc: [
            PLAN.taskvector_path(wc.experiment, j) for j in PLAN.variants[(wc.experiment, wc.variant)]["experts"]
        ],
    output:
        weights=_merged_weights("results/merged/{experiment}/{variant}.safetensors"),
        info="results/merged/{experiment}/{variant}.json",
    params:
        spec=lambda wc: PLAN.variants[(wc.experiment, wc.variant)],
    threads: THREADS.get("merge", 1)
    log:
        "logs/merge/{experiment}/{variant}.log",
    benchmark:
        "benchmarks/out/merge/{experiment}/{variant}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_scripts/merge.py"
