# task_vector: expert weights - base weights, as safetensors.


rule task_vector:
    input:
        model="results/models/{experiment}/{job}/model.safetensors",
        base=base_files()["weights"],
    output:
        "results/taskvectors/{experiment}/{job}.safetensors",
    params:
        spec=lambda wc: {"experiment": wc.experiment, "job": wc.job},
    log:
        "logs/task_vector/{experiment}/{job}.log",
    benchmark:
        "benchmarks/out/task_vector/{experiment}/{job}.tsv"
    resources:
        mem_mb=3000,
        runtime=10,
    script:
        "../workflow_scripts/task_vector.py"
