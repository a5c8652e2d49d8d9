"""The shipped Snakemake profiles: the workflow profile overrides nothing a cluster profile sets,
and the SLURM profiles carry no fixed resources and no placeholders to edit."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _profile(name):
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def test_workflow_profile_sets_nothing_a_cluster_profile_needs():
    default = _profile("default")
    assert set(default) <= {"rerun-incomplete", "printshellcmds", "keep-going", "show-failed-logs"}
    for cluster in ("slurm", "slurm-gpu"):
        assert not set(default) & set(_profile(cluster))


def test_slurm_profiles_take_account_and_partition_from_the_environment():
    readme = (ROOT / "README.md").read_text()
    for name in ("slurm", "slurm-gpu"):
        prof = _profile(name)
        assert prof["executor"] == "slurm"
        resources = dict(prof["default-resources"])
        for per_rule in (prof.get("set-resources") or {}).values():
            resources.update(per_rule)
        # memory, runtime and GPUs come from the rules (speechmerge.jobresources), not the profile
        assert not {"mem_mb", "runtime", "gpu"} & set(resources), name
        assert "set-threads" not in prof
        text = (ROOT / "profiles" / name / "config.yaml").read_text()
        assert "YOUR_" not in text
        for var in set(re.findall(r"\$(\w+)", yaml.safe_dump(prof))):
            assert var.startswith("SPEECHMERGE_SLURM_") and var in readme, var
