# import_expert: an expert fine-tuned elsewhere (a merge-study experiment's `experts`) -> a model
# folder of the study's base with the expert's full weights (adapters materialised, the encoder
# context cropped like the base), where the finetune rule would have written a trained expert.


rule import_expert:
    input:
        unpack(lambda wc: PLAN.import_expert_inputs(wc.experiment, wc.job)),
    output:
        model=N.MODEL_CONFIG,
        weights=N.MODEL_WEIGHTS,
        info=N.EXPERT_INFO,
    log:
        "logs/import_expert/{experiment}/{job}.log",
    benchmark:
        "benchmarks/out/import_expert/{experiment}/{job}.tsv"
    wildcard_constraints:
        experiment=alternatives(e for (e, _) in PLAN.imported),
    conda:
        CONDA_ENV
    resources:
        mem_mb=job_resource("import_expert", "mem_mb"),
        runtime=job_resource("import_expert", "runtime"),
    params:
        spec=lambda wc: PLAN.import_expert_spec(wc.experiment, wc.job),
    script:
        "../workflow_scripts/import_expert.py"
