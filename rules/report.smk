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
            subcategory="figures and CSV data",
        ),
    log:
        "logs/report/{experiment}.log",
    benchmark:
        "benchmarks/out/report/{experiment}.tsv"
    conda:
        CONDA_ENV
    resources:
        mem_mb=job_resource("report", "mem_mb"),
        runtime=job_resource("report", "runtime"),
    params:
        spec=lambda wc: PLAN.report_spec(wc.experiment),
        captions=lambda wc: report_captions(PLAN.report_spec(wc.experiment)),
    script:
        "../workflow_scripts/report.py"


# report_tables: the Markdown tables and the README of a report as HTML pages, registered in the
# HTML report (snakemake --report) next to the figures.
rule report_tables:
    input:
        N.REPORT_DIR,
    output:
        dir=report(
            directory(N.REPORT_TABLES_DIR),
            patterns=["{name}.html"],
            caption="../docs/report_table_caption.rst",
            category="{experiment}",
            subcategory="tables",
            labels={"table": "{name}"},
        ),
    log:
        "logs/report_tables/{experiment}.log",
    benchmark:
        "benchmarks/out/report_tables/{experiment}.tsv"
    conda:
        CONDA_ENV
    resources:
        mem_mb=job_resource("report_tables", "mem_mb"),
        runtime=job_resource("report_tables", "runtime"),
    params:
        captions=lambda wc: report_captions(PLAN.report_spec(wc.experiment)),
    script:
        "../workflow_scripts/report_tables.py"
