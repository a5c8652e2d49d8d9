"""speechmerge.utils: job thread limits."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("torch_first", [False, True])
def test_set_threads_limits_torch_whether_imported_before_or_after(torch_first):
    code = (
        ("import torch\n" if torch_first else "") + "import sys\nfrom speechmerge.utils import set_threads\n"
        "set_threads(1)\n"
        "assert ('torch' in sys.modules) == %r, 'set_threads must not import torch'\n"
        "import torch\nprint(torch.get_num_threads())\n" % torch_first
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
    )
    assert out.stdout.strip() == "1"
