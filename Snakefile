# speechmerge: merging and adapting Whisper for multilingual ASR and speech translation.
#
#   snakemake --cores all                         # the embedded default (config.yaml)
#   snakemake --cores all --configfile presets/smoke.yaml
#
# DAG: import_model + synthesize_corpus -> finetune -> task_vector -> merge -> evaluate -> report
import os

from snakemake.utils import min_version

min_version("9.0")


# The embedded default lives next to this file, so `--directory elsewhere` works too;
# `--configfile presets/X.yaml` is applied on top of it (lists replaced, mappings merged).
configfile: os.path.join(workflow.basedir, "config.yaml")


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/finetune.smk"
include: "rules/experts.smk"
include: "rules/taskvectors.smk"
include: "rules/merge.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        PLAN.all_targets(),
