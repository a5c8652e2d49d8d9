# task_vector: expert weights - base weights, as safetensors.


rule task_vector:
    input:
        model=N.MODEL_WEIGHTS,
        base=BASE_MODEL["weights"],
    output:
        N.TASK_VECTOR,
    log:
        "logs/task_vector/{experiment}/{job}.log",
    benchmark:
        "benchmarks/out/task_vector/{experiment}/{job}.tsv"
    conda:
        CONDA_ENV
    resources:
        mem_mb=job_resource("task_vector", "mem_mb"),
        runtime=job_resource("task_vector", "runtime"),
    params:
        spec=lambda wc: {"experiment": wc.experiment, "job": wc.job},
    script:
        "../workflow_scripts/task_vector.py"
