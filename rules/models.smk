# import_model: a model spec (bundle:, random:, hf:) -> a Hugging Face Whisper directory.


rule import_model:
    output:
        model="resources/models/{model_name}/config.json",
        weights="resources/models/{model_name}/model.safetensors",
        info="resources/models/{model_name}/import_info.json",
    params:
        spec=lambda wc: {
            "spec": config["base_model"]["spec"],
            "max_seconds": config.get("audio", {}).get("max_seconds"),
            "seed": config.get("seed", 0),
        },
    log:
        "logs/import_model/{model_name}.log",
    benchmark:
        "benchmarks/out/import_model/{model_name}.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../workflow_scripts/import_model.py"
