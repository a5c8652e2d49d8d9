"""Resumable training state on disk: tensors as safetensors, optimizer state flattened to
tensors plus JSON (no pickle), and the latest ``step-XXXXXXX`` folder of a job."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta_state = {}, {}
    for idx, st in opt_state["state"].items():
        meta_state[str(idx)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().contiguous()
            else:
                meta_state[str(idx)][k] = v
    return tensors, {"param_groups": opt_state["param_groups"], "state": meta_state}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {int(i): dict(v) for i, v in meta["state"].items()}
    for key, t in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    return {"state": state, "param_groups": meta["param_groups"]}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path)) if path.exists() else {}


def latest_checkpoint(ckpt_dir: str | os.PathLike | None) -> Path | None:
    if not ckpt_dir or not Path(ckpt_dir).is_dir():
        return None
    done = sorted(p for p in Path(ckpt_dir).glob("step-*") if (p / "state.json").exists())
    return done[-1] if done else None
