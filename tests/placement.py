"""A check that code keeps every tensor on its model's device, run on the CPU.

Inside ``placement_check()`` the default device is ``meta``: a tensor created without an explicit
device (``torch.zeros(n)``, ``torch.tensor(ids)``, ``torch.arange(n)``) lands on ``meta`` instead of
the CPU, and the dispatch mode below fails the first operator that then combines it with the
model's CPU tensors, naming the operator and the devices. On a GPU the same mistake would put the
tensor on the host next to CUDA tensors: the step would fail there (or copy every time). Scalars
(0-dim tensors) may come from anywhere, as PyTorch allows.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class MixedDevices(AssertionError):
    pass


class OneDevicePerOp(TorchDispatchMode):
    """Fail an operator whose non-scalar tensor arguments sit on more than one device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {t.device for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.dim() > 0}
        if len(devices) > 1:
            shapes = [
                (tuple(t.shape), str(t.device)) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
            ]
            raise MixedDevices(f"{func}: tensors on {sorted(map(str, devices))}: {shapes}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def placement_check():
    """``meta`` as the default device and one device per operator, for the block."""
    with torch.device("meta"), OneDevicePerOp():
        yield
