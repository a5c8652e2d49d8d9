# synthesize_corpus: corpus sentences -> eSpeak NG speech in an acoustic domain -> parquet split
# (or a local manifest's audio, or a hub dataset). audio_checksum: what a manifest split is made of.


rule audio_checksum:
    input:
        manifest_audio,
    output:
        N.AUDIO_CHECKSUM,
    log:
        "logs/audio_checksum/{experiment}/{subset}/{split}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=job_resource("audio_checksum", "mem_mb"),
        runtime=job_resource("audio_checksum", "runtime"),
    params:
        manifest=dataset_manifest,
    script:
        "../workflow_scripts/audio_checksum.py"


rule synthesize_corpus:
    input:
        unpack(split_inputs),
    output:
        N.DATASET,
    log:
        "logs/synthesize_corpus/{experiment}/{subset}/{split}.log",
    benchmark:
        "benchmarks/out/synthesize_corpus/{experiment}/{subset}/{split}.tsv"
    # Cheap, and every training job waits on it: before training (priority 10) and evaluation.
    priority: 20
    conda:
        CONDA_ENV
    threads: THREADS.get("synthesize", 1)
    resources:
        mem_mb=job_resource("synthesize_corpus", "mem_mb"),
        runtime=job_resource("synthesize_corpus", "runtime"),
    params:
        spec=lambda wc: PLAN.datasets[(wc.experiment, wc.subset, wc.split)],
    script:
        "../workflow_scripts/synthesize_corpus.py"
