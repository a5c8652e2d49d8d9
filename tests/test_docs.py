"""The code in docs/extending.md runs: its merge method merges and its PEFT method registers
(in a fresh process, so the test session's registries stay as they are)."""

import subprocess
import sys

from speechmerge.config import ROOT

SCRIPT = r"""
import re, sys, torch
text = open(sys.argv[1]).read()
merge = re.search(r"## A merging method.*?```python\n(.*?)```", text, re.S).group(1)
exec(merge, {})
from speechmerge.merging.engine import merge_state_dicts
out = merge_state_dicts({"w": torch.zeros(2, 2)}, [{"w": torch.ones(2, 2)}, {"w": 3 * torch.ones(2, 2)}], "my_merge")
assert out["w"].eq(2.0).all(), out
peft = re.search(r"## A fine-tuning \(PEFT\) method.*?```python\n(.*?)```", text, re.S).group(1)
exec(peft, {})
from speechmerge.training.peft import REGISTRY
assert "my_adapter" in REGISTRY
print("ok")
"""


def test_extending_snippets_run():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT / "docs" / "extending.md")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
