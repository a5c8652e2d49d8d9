# import_model: a model spec (bundle:, random:, hf:) -> a Hugging Face Whisper directory.


rule import_model:
    output:
        model=N.BASE_MODEL_CONFIG,
        weights=N.BASE_MODEL_WEIGHTS,
        info=N.BASE_MODEL_INFO,
        stamp=PLAN.import_stamp(),
    log:
        "logs/import_model/{model_name}.log",
    benchmark:
        "benchmarks/out/import_model/{model_name}.tsv"
    conda:
        CONDA_ENV
    resources:
        mem_mb=job_resource("import_model", "mem_mb"),
        runtime=job_resource("import_model", "runtime"),
    params:
        spec=lambda wc: {
            "spec": config["base_model"]["spec"],
            "max_seconds": config.get("audio", {}).get("max_seconds"),
            "seed": config.get("seed", 0),
        },
    script:
        "../workflow_scripts/import_model.py"


# The base at Whisper's native 30 s context, for the zero-shot row at 30 s (when the
# experiments crop the encoder: audio.max_seconds).
rule import_native_model:
    output:
        model=N.NATIVE_MODEL_CONFIG,
        weights=N.NATIVE_MODEL_WEIGHTS,
        info=N.NATIVE_MODEL_INFO,
        stamp=PLAN.import_stamp(native=True),
    log:
        "logs/import_native_model/{model_name}.log",
    benchmark:
        "benchmarks/out/import_native_model/{model_name}.tsv"
    conda:
        CONDA_ENV
    resources:
        mem_mb=job_resource("import_model", "mem_mb"),
        runtime=job_resource("import_model", "runtime"),
    params:
        spec=lambda wc: {
            "spec": config["base_model"]["spec"],
            "max_seconds": None,
            "seed": config.get("seed", 0),
        },
    script:
        "../workflow_scripts/import_model.py"
