# synthesize_corpus: corpus sentences -> eSpeak NG speech in an acoustic domain -> parquet split.


rule synthesize_corpus:
    input:
        corpus=CORPUS,
    output:
        "results/data/{experiment}/{subset}/{split}.parquet",
    params:
        spec=lambda wc: PLAN.datasets[(wc.experiment, wc.subset, wc.split)],
    threads: THREADS.get("synthesize", 1)
    # Cheap, and every training job waits on it: before training (priority 10) and evaluation.
    priority: 20
    log:
        "logs/synthesize_corpus/{experiment}/{subset}/{split}.log",
    benchmark:
        "benchmarks/out/synthesize_corpus/{experiment}/{subset}/{split}.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../workflow_scripts/synthesize_corpus.py"
