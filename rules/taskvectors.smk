# task_vector: expert weights - base weights, as safetensors.


rule task_vector:
    input:
        model=N.MODEL_WEIGHTS,
        base=lambda wc: PLAN.theta0_weights(wc.experiment),
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


# Cosine similarity of every pair of experts' task vectors, taken from the imported base and from
# θ₀, over all weights, the encoder and the decoder (the report's context table).
rule taskvector_cosines:
    input:
        unpack(lambda wc: PLAN.taskvector_cosines_inputs(wc.experiment)),
    output:
        N.TASKVECTOR_COSINES,
    log:
        "logs/taskvector_cosines/{experiment}.log",
    benchmark:
        "benchmarks/out/taskvector_cosines/{experiment}.tsv"
    conda:
        CONDA_ENV
    resources:
        mem_mb=job_resource("taskvector_cosines", "mem_mb"),
        runtime=job_resource("taskvector_cosines", "runtime"),
    params:
        spec=lambda wc: {
            "experiment": wc.experiment,
            "experts": PLAN.experts[wc.experiment],
        },
    script:
        "../workflow_scripts/taskvector_cosines.py"
