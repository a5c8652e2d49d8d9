"""The device setting: schema, per-stage overrides, the plan-time check, job specs, GPU slots,
and the README's GPU example."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import yaml

from speechmerge import devices as DV
from speechmerge.config import ROOT, load_config, validate_config
from speechmerge.plan import PlanError, build_plan


@pytest.fixture(scope="module")
def default():
    return load_config(ROOT / "config.yaml")


def test_stage_overrides_and_names(default):
    cfg = {"device": "cuda", "training": {"device": "cuda:1"}, "merging": {}}
    assert DV.stage_device(cfg, "training") == ("cuda:1", "training.device")
    assert DV.stage_device(cfg, "evaluation") == ("cuda", "device")
    assert DV.stage_device({}, "merging") == ("cpu", "device")
    with pytest.raises(ValueError, match=r"'device': 'gpu' is not a device \(auto, cpu, cuda or cuda:N\)"):
        DV.stage_device({"device": "gpu"}, "training")
    with pytest.raises(Exception, match=r"'device': 'gpu' does not match"):
        validate_config({**copy.deepcopy(default), "device": "gpu"})


def test_cuda_without_cuda_stops_the_plan_naming_the_key(default):
    cfg = copy.deepcopy(default)
    cfg["evaluation"]["device"] = "cuda:0"
    validate_config(cfg)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(PlanError, match=r"config key 'evaluation.device': 'cuda:0' but this machine has no CUDA"):
        build_plan(cfg)
    DV.check_devices(cfg, count=2)  # two GPUs: fine
    with pytest.raises(ValueError, match=r"'evaluation.device': 'cuda:0' but this machine has no CUDA device"):
        DV.check_devices(cfg, count=0)
    cfg["evaluation"]["device"] = "cuda:3"
    with pytest.raises(ValueError, match=r"'cuda:3' but this machine has 2 CUDA device\(s\)"):
        DV.check_devices(cfg, count=2)
    cfg["gpu"] = {"check": "node"}  # a cluster's submit host: each job checks its own node
    build_plan(cfg)


def test_the_cpu_default_leaves_every_job_spec_as_it_was(default):
    plan = build_plan(copy.deepcopy(default))
    assert not any("device" in spec for spec in plan.jobs.values())
    assert "device" not in plan.evaluation_settings
    assert not any("device" in plan.merge_spec(e, v) for (e, v) in plan.variants)


def test_devices_reach_every_stage(default):
    cfg = copy.deepcopy(default)
    cfg.update(device="auto", gpu={"jobs_per_gpu": 3, "check": "node"})
    cfg["merging"] = {"device": "cuda"}
    plan = build_plan(cfg)
    assert {s["device"] for s in plan.jobs.values()} == {"auto"} and {
        s["jobs_per_gpu"] for s in plan.jobs.values()
    } == {3}
    assert plan.evaluation_settings["device"] == "auto"
    specs = [plan.merge_spec(e, v) for (e, v) in plan.variants]
    assert {s["device"] for s in specs} == {"cuda"}
    assert {s["selection"]["decoding"]["device"] for s in specs if s.get("selection")} == {"auto"}
    assert plan.experts_dev_spec("multilingual")["device"] == "auto"


def test_job_device_on_the_cpu():
    assert DV.job_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert DV.job_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="device 'cuda': this node has no CUDA device"):
            DV.job_device("cuda")


HOLD = """
import sys, time
from speechmerge import devices
print(devices.claim_gpu(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]), flush=True)
time.sleep(30)
"""


def test_gpu_slots_spread_jobs_over_gpus_then_share(tmp_path, monkeypatch):
    """Each job locks one slot: two GPUs, one job each first; with 2 jobs per GPU the third shares."""
    monkeypatch.setattr(DV, "_CLAIMED", {})
    monkeypatch.setattr(DV, "_HELD", [])
    holders = []
    try:
        for _ in range(2):
            p = subprocess.Popen(
                [sys.executable, "-c", HOLD, "2", "2", str(tmp_path)], stdout=subprocess.PIPE, text=True
            )
            holders.append((p, int(p.stdout.readline())))
        assert sorted(g for _, g in holders) == [0, 1]  # slot 0 of each GPU first
        assert DV.claim_gpu(2, 2, tmp_path) == 0  # then the second slot of GPU 0
        assert DV.claim_gpu(2, 2, tmp_path) == 0  # one slot per job, however often it asks
    finally:
        for p, _ in holders:
            p.kill()
            p.wait()


def test_the_readme_gpu_example_validates_and_plans(default):
    text = (ROOT / "README.md").read_text()
    start = text.index("```yaml\ndevice: cuda")
    block = yaml.safe_load(text[start + len("```yaml\n") : text.index("```", start + 7)])
    cfg = copy.deepcopy(default)
    for key, value in block.items():
        cfg[key] = {**(cfg.get(key) or {}), **value} if isinstance(value, dict) else value
    validate_config(cfg)
    cfg["gpu"]["check"] = "node"  # this machine has no GPU
    plan = build_plan(cfg)
    job = plan.jobs[("multilingual", "expert-de")]
    assert job["device"] == "cuda" and job["gradient_checkpointing"] is True and job["dataloader_workers"] == 4
