# merge: one method with its hyperparameters over an experiment's task vectors -> merged weights.
# A method with a grid (a dev-selected variant) merges every grid point from one read of the
# experts, decodes the experiment's dev sets with each and writes the best point
# (speechmerge.evaluation.selection); its inputs hold no test split.


rule merge:
    input:
        unpack(lambda wc: PLAN.merge_inputs(wc.experiment, wc.variant)),
    output:
        weights=merged_weights(N.MERGED_WEIGHTS),
        info=N.MERGE_INFO,
    log:
        "logs/merge/{experiment}/{variant}.log",
    benchmark:
        "benchmarks/out/merge/{experiment}/{variant}.tsv"
    conda:
        CONDA_ENV
    threads: THREADS.get("merge", 1)
    resources:
        mem_mb=job_resource("merge", "mem_mb"),
        runtime=job_resource("merge", "runtime"),
        gpu=job_resource("merge", "gpu"),
        gpu_mem_mb=job_resource("merge", "gpu_mem_mb"),
        gpu_model=job_resource("merge", "gpu_model"),
    params:
        spec=lambda wc: PLAN.merge_spec(wc.experiment, wc.variant),
    script:
        "../workflow_scripts/merge.py"
