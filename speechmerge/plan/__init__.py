"""From a validated config to the plan of the DAG: what to synthesise, train, import, merge and
evaluate.

The Snakefile asks the ``Plan`` (``core``), never the raw config, what exists. ``build_plan``
(``build``) lets each experiment's kind (``speechmerge.experiments``) plan it with the helpers
of ``data`` (datasets, test sets), ``training`` (fine-tuning jobs, baselines, seeds) and
``merges`` (merge variants, dev selection, sweeps); ``checks`` runs what the schema cannot
check before any job. Keeping this logic here, not in ``rules/*.smk``, makes it testable and
keeps the rules declarative.
"""

from speechmerge.names import SPLITS, TASKS, format_value
from speechmerge.plan.build import build_plan
from speechmerge.plan.core import Plan, PlanError

__all__ = ["Plan", "PlanError", "SPLITS", "TASKS", "build_plan", "format_value"]
