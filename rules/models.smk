# import_model: a model spec (bundle:, random:, hf:) -> a Hugging Face Whisper directory, for the
# run's base model and any base an experiment names for itself. When audio.max_seconds crops
# the encoder, import_native_model also writes each base at Whisper's native 30 s context (the
# zero-shot row at 30 s). One rule per folder, with literal paths: each folder's provenance file
# (import-<digest>.json, a digest of spec, context and seed) is one of its outputs, so a folder
# imported with another spec or context is rebuilt.
# The config hash is not a param: a param change makes Snakemake rerun the job, and adding a merge
# method to the config must not retrain every expert. Scripts record it (speechmerge.utils.job_spec).


for _name, _native in PLAN.imports():

    rule:
        name:
            import_rule_name(_name, _native)
        output:
            model=(N.NATIVE_MODEL_CONFIG if _native else N.BASE_MODEL_CONFIG).format(
                model_name=_name
            ),
            weights=(
                N.NATIVE_MODEL_WEIGHTS if _native else N.BASE_MODEL_WEIGHTS
            ).format(model_name=_name),
            info=(N.NATIVE_MODEL_INFO if _native else N.BASE_MODEL_INFO).format(
                model_name=_name
            ),
            stamp=PLAN.import_stamp(_name, _native),
        log:
            f"logs/{import_rule_name(_name, _native)}/{_name}.log",
        benchmark:
            f"benchmarks/out/{import_rule_name(_name, _native)}/{_name}.tsv"
        conda:
            CONDA_ENV
        resources:
            mem_mb=import_resource(_name, "mem_mb"),
            runtime=import_resource(_name, "runtime"),
        params:
            spec=PLAN.import_spec(_name, _native),
        script:
            "../workflow_scripts/import_model.py"
