"""Rule report_tables: the report's Markdown tables and README as HTML pages (snakemake --report).

input: the report directory of one experiment; output.dir: where the pages go.
"""

from speechmerge.report.html import write_html_tables
from speechmerge.utils import setup_script_logging

log = setup_script_logging(snakemake.log[0])  # noqa: F821
pages = write_html_tables(snakemake.input[0], snakemake.output.dir)  # noqa: F821
log.info("%d HTML pages: %s", len(pages), ", ".join(p.name for p in pages))
