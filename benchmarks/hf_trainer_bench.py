"""The project's training step against the Hugging Face fine-tuning recipe, in one invocation.

What a speech researcher would otherwise write: ``Seq2SeqTrainer`` over
``WhisperForConditionalGeneration`` with ``labels`` (the model shifts them into decoder inputs and
computes the cross-entropy over every position), AdamW (``optim="adamw_torch"``), gradient
clipping at 1.0, a linear schedule, ``bf16=True`` for bfloat16 (autocast on CPU). The project's
step is ``benchmarks/train_bench.py``'s ``Setup``: the fine-tuning trainer's model set-up
(contiguous encoder states, blocked vocabulary head and sparse embedding gradient, logits at
target positions only), loss, clipping and fused AdamW.

Both train Whisper base (``--model``; a random base-sized model cropped to ``--seconds`` when the
folder is missing) on the same batch: ``--batch`` utterances of random log-mel features at the
model's context and the same ``--tokens`` target tokens per utterance, at the same thread count,
kernel path (``--cpu-isa``) and precision (``--precision``), under deterministic algorithms as
in a fine-tuning job. Rounds alternate the two (``--rounds``), so both see the same machine load;
each round times ``--steps`` steps after ``--warmup`` untimed ones. A recipe step is timed from
the Trainer's ``on_step_begin`` to its ``on_step_end`` (forward, backward, clipping, optimizer,
scheduler, zeroing); a project step from zeroing the gradients to the optimizer step. Prints the
median step of each, samples/s and the ratio (project over recipe; > 1: the project is faster),
then the step's FLOPs (``train_bench.count_flops``) against the machine's GEMM rate in that
precision (``train_bench.gemm_peak``): the fraction of it each reaches, and the ratio a step
running entirely at that rate would have over the recipe (the ceiling for equal work)::

    .venv/bin/python benchmarks/hf_trainer_bench.py                          # float32, native, 2 threads
    .venv/bin/python benchmarks/hf_trainer_bench.py --precision bfloat16
    .venv/bin/python benchmarks/hf_trainer_bench.py --cpu-isa avx2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_bench import Setup, count_flops, gemm_peak, load_model, make_batch, pin_code_path  # noqa: E402


class _Features(torch.utils.data.Dataset):
    """The benchmark batch as a dataset of single utterances, in the recipe's format."""

    def __init__(self, batch: dict[str, torch.Tensor]):
        self.feats = batch["input_features"]
        # the recipe's labels: the whole sequence after <|startoftranscript|> (prompt, text,
        # end-of-text), unmasked; the model prepends the start token itself (shift_tokens_right)
        self.labels = torch.cat([batch["decoder_input_ids"], batch["labels"][:, -1:]], dim=1)[:, 1:]

    def __len__(self) -> int:
        return self.feats.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"input_features": self.feats[i], "labels": self.labels[i]}


def _collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "input_features": torch.stack([r["input_features"] for r in rows]),
        "labels": torch.stack([r["labels"] for r in rows]),
    }


def recipe_times(args, precision: str) -> list[float]:
    """Step times of ``Seq2SeqTrainer`` (the recipe), ``args.warmup`` untimed steps first."""
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    model, _ = load_model(args.model, args.seconds)
    model.config.use_cache = False
    batch = make_batch(model, args.batch, args.tokens)
    data = _Features(batch)
    n_steps = args.warmup + args.steps
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as out:
        targs = Seq2SeqTrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            max_steps=n_steps,
            learning_rate=3e-5,
            warmup_steps=1,
            weight_decay=0.0,
            max_grad_norm=1.0,
            optim="adamw_torch",
            lr_scheduler_type="linear",
            bf16=precision == "bfloat16",
            use_cpu=True,
            report_to=[],
            logging_strategy="no",
            save_strategy="no",
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
            seed=0,
        )
        # an epoch is one batch: repeat the utterances so that max_steps steps see the same batch
        data_rep = torch.utils.data.ConcatDataset([data] * n_steps)
        trainer = Seq2SeqTrainer(
            model=model, args=targs, train_dataset=data_rep, data_collator=_collate, callbacks=[Timer()]
        )
        trainer.train()
    return times[args.warmup :]


def project_times(args, precision: str) -> tuple[list[float], str]:
    """Step times of the project's trainer set-up (``train_bench.Setup``), after ``args.warmup`` steps."""
    s = Setup(args, precision, "auto", "fused")
    for _ in range(args.warmup):
        s.step()
    return [s.step() for _ in range(args.steps)], s.label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resources/models/whisper-base")
    ap.add_argument("--seconds", type=int, default=5, help="context of the random model when --model is missing")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=24, help="target text tokens per utterance")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before each round's timed ones")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of recipe and project")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["float32", "bfloat16", "auto"], default="float32")
    ap.add_argument("--cpu-isa", choices=["native", "avx2"], default="native")
    args = ap.parse_args()
    args.method = "full"
    pin_code_path(args.cpu_isa)

    from speechmerge.allocator import keep_freed_memory
    from speechmerge.numerics import machine, resolve_precision
    from speechmerge.training.trainer import deterministic_algorithms

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # process-wide, as in a fine-tuning job: both sides reuse freed memory
    precision = resolve_precision(args.precision)
    m = machine()
    print(f"# {m['cpu']} ({' '.join(m['cpu_flags'])}); kernels {m.get('torch_cpu_capability')} ({args.cpu_isa})")
    print(
        f"# {precision}, {args.threads} thread(s), batch {args.batch}, {args.tokens} text tokens, "
        f"{args.steps} timed steps x {args.rounds} rounds; load average {os.getloadavg()[0]:.2f}"
    )
    recipe: list[float] = []
    project: list[float] = []
    label = ""
    with deterministic_algorithms():  # as a fine-tuning job runs (the recipe too, for equal kernels)
        for r in range(args.rounds):
            rt = recipe_times(args, precision)
            pt, label = project_times(args, precision)
            recipe += rt
            project += pt
            print(
                f"round {r + 1}: recipe median {statistics.median(rt):.3f} s/step, "
                f"project median {statistics.median(pt):.3f} s/step"
            )
    rm, pm = statistics.median(recipe), statistics.median(project)
    print(f"recipe  (Seq2SeqTrainer, {precision}): {rm:.3f} s/step, {args.batch / rm:.2f} samples/s (n={len(recipe)})")
    print(f"project ({label}): {pm:.3f} s/step, {args.batch / pm:.2f} samples/s (n={len(project)})")
    print(f"ratio project/recipe: {rm / pm:.2f}x  (load average {os.getloadavg()[0]:.2f})")
    # the ceiling: the step's FLOPs at the machine's large-GEMM rate in this precision
    flops = count_flops(args)
    peak = gemm_peak(torch.bfloat16 if precision == "bfloat16" else torch.float32)["square 2048"]
    floor_s = flops / peak / 1e9
    print(
        f"one step is {flops / 1e9:.1f} GFLOP; {precision} GEMM peak {peak:.0f} GFLOP/s ({args.threads} threads): "
        f"recipe at {100 * floor_s / rm:.0f} %, project at {100 * floor_s / pm:.0f} % of it; a step at the peak "
        f"would take {floor_s:.3f} s, {rm / floor_s:.2f}x the recipe"
    )


if __name__ == "__main__":
    main()
