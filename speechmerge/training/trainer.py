"""Seq2seq fine-tuning of Whisper (ASR + X->en ST), steps-based, deterministic and resumable.

Objective: token-level cross entropy of the target tokens (text + <|endoftext|>) given the
decoder prompt (see ``batching``), averaged over all target tokens of the effective batch
(``batch_size * grad_accum`` examples), plus the method's regulariser (AdaLoRA orthogonality,
S2-LoRA L1) once per optimizer step. Logits are computed only at target positions
(``proj_out`` on the selected hidden states), which skips prompt and padding positions.

Optimiser: AdamW (betas 0.9/0.999, eps 1e-8; weight decay on >= 2-D tensors only, i.e. not on
biases, layer norms or S2-LoRA coefficients), learning rate linear warm-up over
``warmup_steps`` then linear (or cosine, ``lr_schedule``) decay to 0 at ``steps``; gradient
clipping to ``max_grad_norm`` (global L2 norm).

Data order: optimizer step k uses items ``step_indices(n, seed, k, batch_size * grad_accum)``
of a stream of per-epoch numpy permutations, so the order is a pure function of (seed, step).

Every ``eval_every`` steps (and at the last step) the dev loss and token accuracy are computed
(inference mode, dropout off); the weights with the lowest dev loss are kept and used for the
output (``select_best``). Every ``checkpoint_every`` steps the trainable tensors, the best
tensors, AdamW and scheduler state, torch's RNG state, the method's extra state and the log so
far go to ``checkpoint_dir/step-XXXXXXX/`` (safetensors + JSON, no pickle); a run finding a
checkpoint made with the same spec and inputs resumes from it, with bit-identical results on
the same machine and thread count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from speechmerge.data.io import skipped_audio
from speechmerge.devices import gpu_info, job_device
from speechmerge.numerics import resolve_precision
from speechmerge.training import batching
from speechmerge.training.checkpoints import (
    flatten_optimizer,
    latest_checkpoint,
    load_tensors,
    save_tensors,
    unflatten_optimizer,
)
from speechmerge.training.layout import contiguous_encoder_states
from speechmerge.training.objective import evaluate_items, lr_factor, target_loss
from speechmerge.training.outputs import plot_loss, write_log_csv
from speechmerge.training.peft import build_method, count_parameters, method_hparams
from speechmerge.training.spec import TrainSpec, choose_attention
from speechmerge.training.vocab_head import sparse_token_embedding
from speechmerge.utils import atomic_path, config_hash, json_default, provenance, remove_output_tree, write_json

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite."""


@dataclasses.dataclass
class _Data:
    items: list
    features: batching.FeatureFile
    n_utts: int
    dropped: int


def _load_data(
    paths: Sequence[str], tasks, processor, n_samples: int, max_length: int, what: str, progress: bool, folder: str
) -> _Data:
    """The items of a split (decoder sequences, in memory) and their log-mel features, written
    to ``folder/<what>.f32`` chunk by chunk as the split is read: memory does not grow with the
    split. The same features, in the same order, as a bank computed at once."""
    from tqdm.auto import tqdm

    from speechmerge.data.io import iter_examples

    fe = processor.feature_extractor
    sr = fe.sampling_rate
    feats = batching.FeatureFile(Path(folder) / f"{what}.f32", fe.feature_size, n_samples // fe.hop_length)
    items: list = []
    n_seen = 0
    with tqdm(desc=f"log-mel {what}", unit="utt", disable=not progress) as bar:
        for p in paths:
            for chunk in iter_examples(p):
                n_seen += len(chunk)
                keep = [e for e in chunk if len(e.audio) <= n_samples]
                if keep:
                    rows = range(len(feats), len(feats) + len(keep))
                    feats.append(batching.log_mel_bank([e.audio for e in keep], fe, n_samples).numpy())
                    items += batching.expand_items(
                        keep, rows, tasks, processor.tokenizer, max_length=max_length, what=what
                    )
                bar.update(len(chunk))
    dropped = n_seen - len(feats)
    if dropped:
        log.warning(
            "%s: dropping %d of %d utterances longer than the encoder context (%.2f s)",
            what,
            dropped,
            n_seen,
            n_samples / sr,
        )
    if not len(feats):
        raise ValueError(
            f"{what}: no utterances fit the encoder context of {n_samples / sr:.2f} s (files: {list(paths)})"
        )
    return _Data(items, feats, len(feats), dropped)


def _close_data(*datas) -> None:
    for d in datas:
        if d is not None:
            d.features.close()


def _existing_parent(path: str | None) -> str | None:
    """``path`` or its nearest existing parent (None: the system's temporary folder)."""
    if not path:
        return None
    p = Path(path).absolute()
    while not p.is_dir() and p != p.parent:
        p = p.parent
    return str(p) if p.is_dir() else None


class Trainer:
    """One fine-tuning run; ``train()`` below is the public entry point."""

    def __init__(self, spec: TrainSpec, base_dir, train_paths, dev_paths, *, progress: bool = True, after_loading=None):
        from speechmerge.models import load_whisper

        self.spec = spec
        self.progress = progress
        self.base_dir = str(base_dir)
        self.train_paths = [str(p) for p in train_paths]
        self.dev_paths = [str(p) for p in dev_paths]
        self.t_start = time.time()

        self.device = job_device(spec.device, jobs_per_gpu=spec.jobs_per_gpu)
        whisper, processor = load_whisper(self.base_dir)
        whisper = whisper.float()
        self.attn = choose_attention(spec.attn_implementation, int(whisper.config.max_source_positions))
        whisper.set_attn_implementation(self.attn)
        self.processor = processor
        self.total_params = count_parameters(whisper)
        cfg = whisper.config
        self.n_samples = batching.context_samples(cfg, processor.feature_extractor)
        self.pad_id = batching.special_id(processor.tokenizer, batching.EOT)
        max_len = int(cfg.max_target_positions)
        # the splits' log-mel features live in files beside the checkpoints while the job runs
        self._feature_dir = tempfile.TemporaryDirectory(
            prefix="features-", dir=_existing_parent(spec.checkpoint_dir), ignore_cleanup_errors=True
        )
        folder = self._feature_dir.name
        self.train = _load_data(
            self.train_paths, spec.tasks, processor, self.n_samples, max_len, "train", progress, folder
        )
        self.dev = _load_data(self.dev_paths, spec.tasks, processor, self.n_samples, max_len, "dev", progress, folder)
        if after_loading is not None:  # e.g. the allocator's settings for the training steps
            after_loading()
        log.info(
            "job %s/%s: %d train items (%d utterances), %d dev items, context %.2f s",
            spec.experiment,
            spec.job,
            len(self.train.items),
            self.train.n_utts,
            len(self.dev.items),
            self.n_samples / processor.feature_extractor.sampling_rate,
        )

        torch.manual_seed(spec.seed)
        self.method = build_method(spec.method, whisper, spec.peft, spec.steps)
        self.whisper = self.method.whisper
        self.whisper.to(self.device)  # built on the host (same initial values anywhere), then moved
        self.whisper.train()
        if self.device.type == "cpu":  # CPU speed-ups (tests/test_vocab_head.py: the same bits)
            sparse_token_embedding(self.whisper)
        contiguous_encoder_states(self.whisper)
        if spec.gradient_checkpointing:
            # non-reentrant: gradients reach PEFT weights whose layer inputs need none
            self.whisper.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.params = self.method.named_trainable()
        self.n_trainable = sum(p.numel() for p in self.params.values())
        decay = [p for p in self.params.values() if p.ndim >= 2]
        no_decay = [p for p in self.params.values() if p.ndim < 2]
        groups = [
            g
            for g in ({"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]
        ]
        # fused: one pass over param/grad/moments per tensor (2-3x faster than foreach on CPU)
        self.optimizer = torch.optim.AdamW(groups, lr=spec.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
        self.precision = resolve_precision(spec.precision, where="training.precision", device=self.device)
        self.amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.precision, torch.bfloat16)
        self.autocast = self.precision != "float32"
        # float16 only: a loss scale keeps small gradients from underflowing (skipped steps on overflow)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "float16" else None
        self._batches = None  # a DataLoader's iterator while run() trains with workers
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda k: lr_factor(k, warmup=spec.warmup_steps, total=spec.steps, schedule=spec.lr_schedule),
        )
        self.step = 0
        self.rows: list[dict] = []
        self.best = {"step": None, "dev_loss": math.inf, "dev_acc": None}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.train_time = 0.0
        self.samples_seen = 0
        self.resumed_from = None
        self.fingerprint = config_hash(
            {
                "spec": {
                    k: v
                    for k, v in spec.to_dict().items()
                    if k not in ("checkpoint_dir", "keep_checkpoints", "config_hash")
                },
                "base": os.path.abspath(self.base_dir),
                "train": self.train_paths,
                "dev": self.dev_paths,
            }
        )

    # --- checkpoints --------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        if not self.spec.checkpoint_dir:
            return None
        root = Path(self.spec.checkpoint_dir)
        target = root / f"step-{self.step:07d}"
        with atomic_path(target, is_dir=True) as tmp:
            save_tensors(tmp / "trainable.safetensors", self.params)
            if self.best_state is not None:
                save_tensors(tmp / "best.safetensors", self.best_state)
            opt_t, opt_meta = flatten_optimizer(self.optimizer.state_dict())
            save_tensors(tmp / "optimizer.safetensors", opt_t)
            extra_t, extra_meta = self.method.extra_state()
            save_tensors(tmp / "method.safetensors", extra_t)
            rng = {"torch": torch.get_rng_state()}
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.device)
            save_tensors(tmp / "rng.safetensors", rng)
            state = {
                "fingerprint": self.fingerprint,
                "step": self.step,
                "rows": self.rows,
                "best": self.best,
                "train_time": self.train_time,
                "samples_seen": self.samples_seen,
                "optimizer": opt_meta,
                "scheduler": self.scheduler.state_dict(),
                "method": extra_meta,
            }
            (tmp / "state.json").write_text(json.dumps(state, default=json_default))
        for old in root.glob("step-*"):
            if old != target and old.is_dir():
                remove_output_tree(old)
        return target

    def close(self) -> None:
        """Close and remove the feature files."""
        _close_data(getattr(self, "train", None), getattr(self, "dev", None))
        self._feature_dir.cleanup()

    def try_resume(self) -> bool:
        ckpt = latest_checkpoint(self.spec.checkpoint_dir)
        if ckpt is None:
            return False
        state = json.loads((ckpt / "state.json").read_text())
        if state.get("fingerprint") != self.fingerprint:
            log.warning("checkpoint %s was made with another spec or other inputs; starting afresh", ckpt)
            remove_output_tree(self.spec.checkpoint_dir)
            return False
        saved = load_tensors(ckpt / "trainable.safetensors")
        if set(saved) != set(self.params):
            raise KeyError(
                f"checkpoint {ckpt}: trainable tensors differ from the model's "
                f"(missing {sorted(set(self.params) - set(saved))[:5]}, "
                f"unexpected {sorted(set(saved) - set(self.params))[:5]})"
            )
        with torch.no_grad():
            for n, p in self.params.items():
                if p.shape != saved[n].shape:
                    raise ValueError(
                        f"checkpoint {ckpt}: tensor {n} has shape {tuple(saved[n].shape)}, model has {tuple(p.shape)}"
                    )
                p.copy_(saved[n])
        best = load_tensors(ckpt / "best.safetensors")
        self.best_state = best or None
        self.optimizer.load_state_dict(
            unflatten_optimizer(load_tensors(ckpt / "optimizer.safetensors"), state["optimizer"])
        )
        self.scheduler.load_state_dict(state["scheduler"])
        self.method.load_extra_state(load_tensors(ckpt / "method.safetensors"), state["method"])
        rng = load_tensors(ckpt / "rng.safetensors")
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step, self.rows, self.best = state["step"], state["rows"], state["best"]
        self.train_time, self.samples_seen = state["train_time"], state["samples_seen"]
        self.resumed_from = str(ckpt)
        log.info("resumed job %s/%s from %s (step %d)", self.spec.experiment, self.spec.job, ckpt, self.step)
        return True

    # --- one optimizer step -----------------------------------------------------------------
    def train_step(self) -> dict:
        spec = self.spec
        chunks = batching.micro_batches(self.train.items, spec.seed, self.step, spec.batch_size, spec.grad_accum)
        n_tok = sum(it.n_targets for chunk in chunks for it in chunk)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        autocast = self.autocast
        scaler = self.scaler
        for m in range(spec.grad_accum):
            if self._batches is not None:  # prepared ahead by DataLoader workers (the same batch)
                batch = next(self._batches)
            else:
                batch = batching.collate(chunks[m], self.train.features, self.pad_id)
            batch = batching.to_device(batch, self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=autocast):
                loss_sum, _, _ = target_loss(self.whisper, batch, accuracy=False)
            value = float(loss_sum.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"job {spec.experiment}/{spec.job}: training loss is {value} at step "
                    f"{self.step + 1} (lr {self.scheduler.get_last_lr()[0]:.3g}); "
                    "lower the learning rate or check the data"
                )
            loss = loss_sum / n_tok
            (scaler.scale(loss) if scaler else loss).backward()
            total += value
        reg = self.method.regulariser()
        reg_value = None
        if reg is not None:
            (scaler.scale(reg) if scaler else reg).backward()
            reg_value = float(reg.detach())
        if scaler:
            scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), spec.max_grad_norm, foreach=True)
        if not torch.isfinite(grad_norm) and scaler is None:
            raise TrainingDiverged(
                f"job {spec.experiment}/{spec.job}: gradient norm is {float(grad_norm)} at step "
                f"{self.step + 1}; lower the learning rate or check the data"
            )
        lr = self.scheduler.get_last_lr()[0]
        if scaler:  # a step whose gradients overflowed is skipped and the scale lowered
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.method.after_optimizer_step(self.step)
        self.scheduler.step()
        self.step += 1
        self.samples_seen += sum(len(chunk) for chunk in chunks)
        return {"step": self.step, "lr": lr, "loss": total / n_tok, "grad_norm": float(grad_norm), "reg": reg_value}

    def evaluate(self) -> tuple[float, float]:
        bs = self.spec.eval_batch_size or self.spec.batch_size
        return evaluate_items(
            self.whisper,
            self.dev.items,
            self.dev.features,
            self.pad_id,
            bs,
            autocast=self.autocast,
            device=self.device,
            amp_dtype=self.amp_dtype,
        )

    def _is_eval_step(self) -> bool:
        every = self.spec.eval_every
        return self.step == self.spec.steps or bool(every) and self.step % every == 0

    def run(self, stop_after: int | None = None) -> bool:
        """Train up to ``spec.steps`` (or ``stop_after`` steps, then checkpoint); True when done."""
        from tqdm.auto import tqdm

        spec = self.spec
        bar = tqdm(
            total=spec.steps,
            initial=self.step,
            desc=f"{spec.experiment}/{spec.job}",
            disable=not self.progress,
            unit="step",
            dynamic_ncols=True,
        )
        loader = self._loader()
        self._batches = iter(loader) if loader is not None else None
        try:
            while self.step < spec.steps:
                t0 = time.perf_counter()
                row = self.train_step()
                self.train_time += time.perf_counter() - t0
                if self._is_eval_step():
                    dev_loss, dev_acc = self.evaluate()
                    row.update(dev_loss=dev_loss, dev_acc=dev_acc)
                    if dev_loss < self.best["dev_loss"] or self.best["step"] is None:
                        self.best = {"step": self.step, "dev_loss": dev_loss, "dev_acc": dev_acc}
                        if spec.select_best:
                            # kept in host memory: a large model's copy does not take GPU memory
                            self.best_state = {n: p.detach().to("cpu", copy=True) for n, p in self.params.items()}
                row["elapsed"] = round(time.time() - self.t_start, 3)
                self.rows.append(row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}")
                if stop_after is not None and self.step >= stop_after and self.step < spec.steps:
                    self.save_checkpoint()
                    return False
                if spec.checkpoint_every and self.step % spec.checkpoint_every == 0 and self.step < spec.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            self._batches = None  # ends the workers
        return True

    def _loader(self):
        """A ``DataLoader`` preparing the steps' micro-batches ahead in
        ``spec.dataloader_workers`` processes (pinned memory on CUDA), or None (the job collates
        each batch itself). Either way each step gets the same batches."""
        workers = int(self.spec.dataloader_workers or 0)
        if workers < 1 or self.step >= self.spec.steps:
            return None
        spec = self.spec
        data = batching.StepBatches(
            self.train.items,
            self.train.features,
            self.pad_id,
            seed=spec.seed,
            batch_size=spec.batch_size,
            grad_accum=spec.grad_accum,
            start=self.step,
            steps=spec.steps,
        )
        return torch.utils.data.DataLoader(
            data,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2,
            persistent_workers=False,
        )

    # --- output -------------------------------------------------------------------------
    def finish(self, out_dir) -> dict:
        spec = self.spec
        if spec.select_best and self.best_state is not None:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(self.best_state[n])
        facts = self.method.finalize()
        ranks = self.method.rank_allocation()
        merged = self.method.merged().to("cpu")
        merged.eval()
        for p in merged.parameters():
            p.requires_grad_(False)
        info = {
            "experiment": spec.experiment,
            "job": spec.job,
            "method": spec.method,
            "tasks": list(spec.tasks),
            "steps": spec.steps,
            "seed": spec.seed,
            "batch_size": spec.batch_size,
            "grad_accum": spec.grad_accum,
            "lr": spec.lr,
            "peft": method_hparams(spec.method, spec.peft),
            "train_files": self.train_paths,
            "dev_files": self.dev_paths,
            "base": self.base_dir,
            "train_items": len(self.train.items),
            "train_utterances": self.train.n_utts,
            "dev_items": len(self.dev.items),
            "dropped_too_long": {"train": self.train.dropped, "dev": self.dev.dropped},
            # clips the data jobs left out as undecodable, empty or silent (data.on_bad_audio: skip)
            **({"skipped_audio": sk} if (sk := skipped_audio([*self.train_paths, *self.dev_paths])) else {}),
            "context_seconds": self.n_samples / self.processor.feature_extractor.sampling_rate,
            "samples_seen": self.samples_seen,
            "train_time_s": round(self.train_time, 3),
            "wall_time_s": round(time.time() - self.t_start, 3),
            "samples_per_s": round(self.samples_seen / self.train_time, 4) if self.train_time else None,
            "threads": torch.get_num_threads(),
            "precision": self.precision,
            "device": str(self.device),
            **({"gpu": gpu_info()} if self.device.type == "cuda" else {}),
            "gradient_checkpointing": bool(spec.gradient_checkpointing),
            "attn_implementation": self.attn,
            "best_step": self.best["step"],
            "best_dev_loss": self.best["dev_loss"],
            "best_dev_acc": self.best["dev_acc"],
            "final_dev_loss": self.rows[-1].get("dev_loss") if self.rows else None,
            "selected": "best" if spec.select_best else "last",
            "trainable_params": self.n_trainable,
            "total_params": self.total_params,
            "trainable_percent": 100.0 * self.n_trainable / self.total_params,
            "resumed_from": self.resumed_from,
            **facts,
            "spec": spec.to_dict(),
            "provenance": provenance(spec.to_dict(), job_config_hash=spec.config_hash),
        }
        with atomic_path(out_dir, is_dir=True) as tmp:
            merged.save_pretrained(tmp, safe_serialization=True)
            self.processor.save_pretrained(tmp)
            write_log_csv(self.rows, tmp / "training_log.csv")
            plot_loss(self.rows, tmp / "loss.png", f"{spec.experiment}/{spec.job} ({spec.method})")
            write_json(tmp / "rank_allocation.json", ranks or {})
            write_json(tmp / "train_info.json", info)
            if not (tmp / "model.safetensors").exists():
                raise RuntimeError(
                    f"save_pretrained wrote no single model.safetensors in {out_dir} "
                    f"(files: {sorted(p.name for p in tmp.iterdir())})"
                )
        if spec.checkpoint_dir and not spec.keep_checkpoints:
            remove_output_tree(spec.checkpoint_dir)
        return info


def train(
    spec: dict,
    base_dir,
    train_paths: Sequence,
    dev_paths: Sequence,
    out_dir,
    *,
    threads: int | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    deterministic: bool = True,
    after_loading=None,
) -> dict:
    """Fine-tune the Whisper model in ``base_dir`` as ``spec`` says; write the model dir ``out_dir``.
    ``after_loading`` (no arguments) is called once the splits are read, before the first step.

    ``spec`` keys: see ``TrainSpec`` (experiment, job, method, tasks, steps, batch_size,
    grad_accum, lr, warmup_steps, weight_decay, max_grad_norm, eval_every, checkpoint_every,
    seed, peft, checkpoint_dir, ...). Resumes from ``checkpoint_dir`` if it holds a checkpoint
    of the same run. ``stop_after`` (tests, preemption) stops after that many steps with a
    checkpoint and returns ``{"finished": False, "step": k}`` without writing ``out_dir``.
    Returns the train_info dict (also written to ``out_dir/train_info.json``).
    """
    spec_obj = TrainSpec.from_dict(spec)
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    with deterministic_algorithms(deterministic):
        trainer = Trainer(spec_obj, base_dir, train_paths, dev_paths, progress=progress, after_loading=after_loading)
        try:
            trainer.try_resume()
            if not trainer.run(stop_after=stop_after):
                return {"finished": False, "step": trainer.step, "checkpoint_dir": spec_obj.checkpoint_dir}
            info = trainer.finish(out_dir)
            info["finished"] = True
            return info
        finally:
            trainer.close()


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True):
    """``torch.use_deterministic_algorithms`` (warn only) for a training run, restored after.

    Deterministic mode also fills every new tensor with NaN before use
    (``torch.utils.deterministic.fill_uninitialized_memory``), a guard for kernels that read
    memory they have not written. The training step has none (its results are the same bits
    without the fill), and the fill costs about 900 writes of fresh buffers per step, 1.5 % of a
    one-thread step (a profile with the fill on, docs/benchmarks.md), so it is off while training."""
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.utils.deterministic.fill_uninitialized_memory = prev[2]
