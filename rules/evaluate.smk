# evaluate: decode every test set of one model (zero-shot, a fine-tuned job or a merge) and score it.
# One job per model: the model is loaded once and the Python start-up is paid once.


def _eval_spec(wc):
    testsets = [
        {"testset": t, **PLAN.testsets[(wc.experiment, t)]}
        for t in PLAN.model_testsets(wc.experiment, wc.model)
    ]
    return {"experiment": wc.experiment, "model": wc.model, "testsets": testsets, **config.get("evaluation", {})}


def _eval_testset_files(wc):
    return [
        PLAN.dataset_path(wc.experiment, PLAN.testsets[(wc.experiment, t)]["subset"], "test")
        for t in PLAN.model_testsets(wc.experiment, wc.model)
    ]


rule evaluate:
    input:
        model=base_files()["model"],
        weights=lambda wc: PLAN.weights_path(wc.experiment, wc.model),
        testsets=_eval_testset_files,
    output:
        hyps="results/eval/{experiment}/{model}.jsonl",
        scores="results/eval/{experiment}/{model}.json",
    params:
        spec=_eval_spec,
    threads: THREADS.get("evaluate", 1)
    log:
        "logs/evaluate/{experiment}/{model}.log",
    benchmark:
        "benchmarks/out/evaluate/{experiment}/{model}.tsv"
    resources:
        mem_mb=3000,
        runtime=60,
    script:
        "../workflow_scripts/evaluate.py"
