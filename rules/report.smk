# report: the papers' tables (CSV, Markdown, LaTeX) and figures per experiment.


rule report:
    input:
        unpack(lambda wc: PLAN.report_inputs(wc.experiment)),
    output:
        dir=report(
            directory(N.REPORT_DIR),
            patterns=["{figure}.png", "{table}.csv"],
            caption="../docs/report_caption.rst",
            category="{experiment}",
        ),
    log:
        "logs/report/{experiment}.log",
    benchmark:
        "benchmarks/out/report/{experiment}.tsv"
    conda:
        CONDA_ENV
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        spec=lambda wc: PLAN.reports[wc.experiment],
        captions=lambda wc: report_captions(PLAN.reports[wc.experiment]),
    script:
        "../workflow_scripts/report.py"
