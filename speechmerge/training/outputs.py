"""What a fine-tuning job writes beside its model: the training log (CSV) and the loss curve."""

from __future__ import annotations

import csv
from pathlib import Path


def plot_loss(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], lw=1, label="train loss")
    dev = [(r["step"], r["dev_loss"]) for r in rows if r.get("dev_loss") not in (None, "")]
    if dev:
        ax.plot(*zip(*dev), "o-", label="dev loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("token cross entropy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


LOG_COLUMNS = ("step", "lr", "loss", "dev_loss", "dev_acc", "elapsed", "grad_norm", "reg")


def write_log_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in LOG_COLUMNS})
