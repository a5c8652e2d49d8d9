"""Snakemake ``resources:`` of every rule (``mem_mb``, ``runtime`` in minutes, ``gpu``), estimated
from the base model's size and the config, so that a cluster profile carries no fixed numbers.

The estimates are upper bounds calibrated on the default run (Whisper base, 5 s context, 2-core
CPU: fine-tuning peaks at 3.2 GB RSS and 1.4-2.2 samples/s, evaluation at 1.6 GB) and scaled by
parameter count (weights, gradients, optimiser state), by layers x width x context (activations)
and by the amount of data. ``--set-resources RULE:mem_mb=...`` (or a profile's
``set-resources``) overrides any of them. Imports nothing heavy: the Snakefile calls it while the
DAG is built.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Mapping

from speechmerge import names as N

ROW_GROUP = 128  # rows per parquet row group of a split (speechmerge.data.io.ROW_GROUP, tested equal)

#: Python + torch + transformers + datasets imported, before any model is loaded (MB).
OVERHEAD_MB = 1000
#: activation memory per training sample, per second of encoder context, per (layer x width) (MB).
TRAIN_ACT_MB = 0.004
#: CPU seconds per training sample of Whisper base at 5 s context (default run: 1.4-2.2 samples/s).
TRAIN_S_PER_SAMPLE = 0.7
#: CPU seconds per decoded utterance and task of Whisper base at 5 s context.
DECODE_S_PER_UTT = 0.5
#: estimated times are multiplied by this and rounded up: a job is not killed for a slow node.
SAFETY = 3.0
#: on a GPU a job is assumed at least this much faster than the CPU figures above.
GPU_SPEEDUP = 20.0
#: no job asks for more than 48 h (longer jobs: ``--set-resources finetune:runtime=...``).
MAX_RUNTIME_MIN = 48 * 60

#: Whisper sizes: (encoder layers, decoder layers, d_model); the random sizes of
#: ``speechmerge.models.random_init.RANDOM_SIZES`` (checked equal by the tests).
WHISPER_DIMS = {
    "tiny": (4, 4, 384),
    "base": (6, 6, 512),
    "small": (12, 12, 768),
    "medium": (24, 24, 1024),
    "large": (32, 32, 1280),
    "turbo": (32, 4, 1280),
}
RANDOM_DIMS = {"micro": (1, 1, 32), "tiny": (2, 2, 64), "base": (6, 6, 512)}
VOCAB = 51865


@dataclass(frozen=True)
class ModelSize:
    encoder_layers: int
    decoder_layers: int
    d_model: int

    @property
    def params(self) -> int:
        """Approximate parameter count: embeddings + 12 d² per layer + 4 d² cross-attention per
        decoder layer (Whisper base: 72 M against 74 M)."""
        d, layers = self.d_model, self.encoder_layers + self.decoder_layers
        return VOCAB * d + 448 * d + 12 * layers * d * d + 4 * self.decoder_layers * d * d

    @property
    def weights_mb(self) -> float:
        return self.params * 4 / 1e6

    @property
    def scale(self) -> float:
        """Compute per sample relative to Whisper base."""
        return self.params / WHISPER_SIZE_BASE.params

    @property
    def width(self) -> int:
        return (self.encoder_layers + self.decoder_layers) * self.d_model


WHISPER_SIZE_BASE = ModelSize(*WHISPER_DIMS["base"])


def model_size(spec: str) -> ModelSize:
    """The size of the model a ``base_model.spec`` names: ``random:<size>``, ``bundle:whisper-<size>``,
    ``hf:<id or path>`` (the ``config.json`` of a local directory, else the size word in the name,
    else ``large`` — the safe side)."""
    scheme, _, ref = str(spec).partition(":")
    if scheme == "random":
        if ref not in RANDOM_DIMS:
            raise ValueError(f"base_model.spec {spec!r}: unknown random size {ref!r}; known: {', '.join(RANDOM_DIMS)}")
        return ModelSize(*RANDOM_DIMS[ref])
    if scheme == "hf" and os.path.isfile(os.path.join(ref, "config.json")):
        with open(os.path.join(ref, "config.json")) as fh:
            cfg = json.load(fh)
        return ModelSize(int(cfg["encoder_layers"]), int(cfg["decoder_layers"]), int(cfg["d_model"]))
    words = re.findall(r"[a-z]+", ref.rsplit("/", 1)[-1].lower())
    for name in ("turbo", "large", "medium", "small", "base", "tiny"):
        if name in words:
            return ModelSize(*WHISPER_DIMS[name])
    return ModelSize(*WHISPER_DIMS["large"])


def _context_s(config: Mapping) -> float:
    return float((config.get("audio") or {}).get("max_seconds") or 30)


#: the rules that run a model, and which stage's device each computes on (speechmerge.devices;
#: a merge that selects on dev decodes on the evaluation device as well); the others never ask
#: for a GPU
RULE_STAGE = {
    "finetune": "training",
    "evaluate": "evaluation",
    "evaluate_experts_dev": "evaluation",
    "merge": "merging",
}
#: CUDA context, cuBLAS / cuDNN workspaces and the caching allocator's slack (MB)
CUDA_OVERHEAD_MB = 1500


def _stage_setting(config: Mapping, stage: str) -> str:
    own = (config.get(stage) or {}).get("device")
    return str(own if own is not None else config.get("device", "cpu"))


def _cuda_here() -> bool:
    """Whether this machine has an NVIDIA driver (without importing torch)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def _uses_gpu(setting: str) -> bool:
    return setting.startswith("cuda") or (setting == "auto" and _cuda_here())


def on_gpu(config: Mapping, rule: str, *, selects: bool = False) -> bool:
    """Whether a job of ``rule`` computes on a GPU: its stage's device is cuda (or auto where the
    plan is built on a machine with an NVIDIA driver); a merge that selects on dev also decodes
    on the evaluation device."""
    if rule not in RULE_STAGE:
        return False
    if rule == "merge" and selects and _uses_gpu(_stage_setting(config, "evaluation")):
        return True
    return _uses_gpu(_stage_setting(config, RULE_STAGE[rule]))


def _minutes(seconds: float, floor: int = 5, *, gpu: bool) -> int:
    if gpu:
        seconds /= GPU_SPEEDUP
    return int(min(MAX_RUNTIME_MIN, floor + math.ceil(SAFETY * seconds / 60)))


def gpu_memory_mb(
    size: "ModelSize",
    *,
    task: str,
    batch: int,
    context_s: float,
    method: str = "full",
    checkpointing: bool = False,
    precision: str = "bfloat16",
) -> float:
    """GPU memory of one job (MB), computed, not measured: ``task`` train / decode / merge.

    Training: float32 weights; for full fine-tuning also their gradients and AdamW's two moments
    (16 bytes per parameter); a PEFT method trains well under 1 % of them. Activations scale with
    batch x context x layers x width (``TRAIN_ACT_MB``, calibrated on the CPU's eager attention,
    halved under bf16/fp16 autocast); gradient checkpointing keeps each layer's input and
    recomputes one layer at a time (about 2 / layers of it). Decoding: the weights in the
    decoding dtype, the cross- and self-attention key/value caches of a batch and the encoder's
    largest buffers. Merging: one tensor per expert at a time, at most 2 x the weights."""
    w = size.weights_mb
    act = TRAIN_ACT_MB * batch * context_s * size.width
    if precision != "float32":
        act /= 2
    if task == "train":
        layers = size.encoder_layers + size.decoder_layers
        if checkpointing:
            act *= min(1.0, 2.0 / max(1, layers) + 0.1)
        state = 4 * w if method == "full" else 1.05 * w
        return CUDA_OVERHEAD_MB + state + act
    if task == "decode":
        # inference keeps no activations: the weights, the decoder's cross-attention keys and values
        # of the batch (every layer, every encoder position), its self-attention cache (448 tokens)
        # and the encoder's largest layer buffers (about 12 x positions x width per utterance)
        nbytes = 4 if precision == "float32" else 2
        positions = context_s * 50  # Whisper's encoder: 50 positions per second
        d, dec = size.d_model, size.decoder_layers
        cross = 2 * dec * batch * positions * d * nbytes
        self_kv = 2 * dec * batch * 448 * d * nbytes
        encoder = 12 * batch * positions * d * nbytes
        return CUDA_OVERHEAD_MB + w * nbytes / 4 + (cross + self_kv + encoder) / 1e6
    if task == "merge":
        return CUDA_OVERHEAD_MB + 2 * w
    raise ValueError(f"unknown task {task!r}")


def _rows(datasets: list[Mapping]) -> int:
    """Utterances in some splits (real-data splits of unknown size count as 1000)."""
    return sum(int(d.get("sentences") or 1000) * int(d.get("renderings", 1)) for d in datasets)


def estimate(
    rule: str,
    config: Mapping,
    *,
    job: Mapping | None = None,
    datasets: list[Mapping] = (),
    dev: list[Mapping] = (),
    n_experts: int = 0,
    n_tasks: int = 1,
    context_s: float | None = None,
    n_merges: int = 0,
    n_points: int = 0,
    base_spec: str | None = None,
) -> dict[str, int]:
    """``{"mem_mb", "runtime", "gpu"}`` of one job of ``rule``.

    ``job``: a fine-tuning job spec (steps, batch_size, grad_accum, eval_every); ``datasets``: the
    dataset specs the job reads (sentences x renderings), ``dev`` those a fine-tuning job
    evaluates on every ``eval_every`` steps; ``n_experts``: task vectors a merge
    reads; ``n_tasks``: tasks decoded per utterance; ``context_s``: the encoder context of this
    job when it is not the config's (the zero-shot row at the native 30 s); ``n_merges`` and
    ``n_points``: the distinct merges and the points of a dev-selected merge's grid, whose
    ``datasets`` are the dev sets every point decodes; ``base_spec``: the spec of the job's base
    model when it is not the run's (an experiment's own ``base_model``).
    """
    size = model_size(base_spec or config["base_model"]["spec"])
    g = on_gpu(config, rule, selects=bool(n_points))
    ctx = float(context_s) if context_s else _context_s(config)
    w = size.weights_mb
    audio_mb = _rows(datasets) * ctx * 16000 * 4 / 1e6 if datasets else 0.0
    # jobs stream their splits (a row group of 128 utterances at a time, docs/data.md): what a
    # job holds of its audio is bounded by two row groups, however long the splits
    held_mb = min(audio_mb, 2 * ROW_GROUP * ctx * 16000 * 4 / 1e6)
    per_sample = TRAIN_S_PER_SAMPLE * size.scale * ctx / 5
    if rule == "finetune":
        job = job or {}
        batch = int(job.get("batch_size", 8)) * int(job.get("grad_accum", 1))
        act = TRAIN_ACT_MB * int(job.get("batch_size", 8)) * ctx * size.width
        # weights, gradients, two Adam moments and the best checkpoint kept in memory
        mem = OVERHEAD_MB + 5 * w + act + held_mb
        if job.get("precision", "float32") != "float32":  # bfloat16 or auto: autocast's bf16 weight copies
            mem += w / 2
        steps = int(job.get("steps", 1))
        dev_passes = steps // max(1, int(job.get("eval_every", steps) or steps)) + 1
        secs = steps * batch * per_sample + dev_passes * _rows(dev) * per_sample / 3
        runtime = _minutes(secs, gpu=g)
    elif rule in ("evaluate", "evaluate_experts_dev"):
        mem = (
            OVERHEAD_MB
            + 2 * w
            + TRAIN_ACT_MB / 8 * int((config.get("evaluation") or {}).get("batch_size", 64)) * ctx * size.width
            + held_mb
        )
        runtime = _minutes(_rows(datasets) * n_tasks * DECODE_S_PER_UTT * size.scale * ctx / 5, gpu=g)
    elif rule == "merge" and n_points:
        # dev selection: θ₀, one float32 delta per distinct merge, a point's weights and the loaded
        # model in memory (+ whole expert tensors with several merges), then decoding like evaluate
        mem = OVERHEAD_MB + (3 + n_merges + (n_experts / 4 if n_merges > 1 else 0)) * w + held_mb
        mem += TRAIN_ACT_MB / 8 * int((config.get("evaluation") or {}).get("batch_size", 64)) * ctx * size.width
        secs = n_merges * max(1, n_experts) * 30 * size.scale
        secs += n_points * _rows(datasets) * DECODE_S_PER_UTT * size.scale * ctx / 5
        runtime = _minutes(secs, gpu=g)
    elif rule == "merge":
        # streamed tensor by tensor: the base, the output and one tensor per expert at a time
        mem = OVERHEAD_MB + 3 * w
        runtime = _minutes(max(1, n_experts) * 30 * size.scale, gpu=g)
    elif rule == "taskvector_cosines":
        # every expert, the base and θ₀ are open at once (memory-mapped tensors stay resident)
        mem = OVERHEAD_MB + (max(2, n_experts) + 3) * w
        runtime = _minutes(max(2, n_experts) * 10 * size.scale, gpu=g)
    elif rule in ("task_vector", "import_model", "import_expert"):
        mem = OVERHEAD_MB + 3 * w
        runtime = _minutes(20 * size.scale, gpu=g)
    elif rule == "synthesize_corpus":
        # synthesised speech is rendered whole; recorded speech streams a record at a time
        synth = all(d.get("source", "synth") == "synth" for d in datasets)
        mem = OVERHEAD_MB / 2 + 4 * (audio_mb if synth else held_mb)
        runtime = _minutes(_rows(datasets) * 0.1, floor=5, gpu=False)
    elif rule == "report":
        mem = OVERHEAD_MB + 2 * w
        runtime = 20
    elif rule == "audio_checksum":
        # reads each audio file of a manifest split once (SHA-256)
        mem = OVERHEAD_MB / 2
        runtime = _minutes(_rows(datasets) * 0.05, gpu=g)
    elif rule == "report_tables":
        mem, runtime = OVERHEAD_MB / 2, 5
    else:
        raise ValueError(f"no resource estimate for rule {rule!r}")
    gpu = 1 if g else 0
    gpu_mem = 0.0
    if gpu:
        gcfg = config.get("gpu") or {}
        if gcfg.get("memory_gb"):
            gpu_mem = float(gcfg["memory_gb"]) * 1000
        elif rule == "finetune":
            job = job or {}
            gpu_mem = gpu_memory_mb(
                size,
                task="train",
                batch=int(job.get("batch_size", 8)),
                context_s=ctx,
                method=str(job.get("method", "full")),
                checkpointing=bool(job.get("gradient_checkpointing")),
                precision=str(job.get("precision", "float32")),
            )
        else:
            ev = config.get("evaluation") or {}
            gpu_mem = gpu_memory_mb(
                size,
                task="decode" if rule != "merge" or n_points else "merge",
                batch=int(ev.get("batch_size", 64)),
                context_s=ctx,
                precision=str(ev.get("dtype", config.get("precision", "float32"))),
            )
    return {
        "mem_mb": int(math.ceil(mem / 100.0) * 100),
        "runtime": int(runtime),
        "gpu": gpu,
        "gpu_mem_mb": int(math.ceil(gpu_mem / 100.0) * 100),
        "gpu_model": str((config.get("gpu") or {}).get("model", "")) if gpu else "",
    }


def resource_args(plan, rule_name: str, wildcards) -> dict:
    """What ``estimate`` needs to know about one job of ``rule_name``, read from the plan."""
    wc = wildcards
    experiment = getattr(wc, "experiment", None)
    base = {"base_spec": plan.bases[plan.base_of(experiment)]["spec"]} if experiment else {}
    return {**base, **_job_args(plan, rule_name, wc)}


def _job_args(plan, rule_name: str, wc) -> dict:
    if rule_name == "finetune":
        job = plan.jobs[(wc.experiment, wc.job)]
        return {
            "job": job,
            "datasets": [plan.datasets[t] for t in job["train"]],
            "dev": [plan.datasets[t] for t in job["dev"]],
        }
    if rule_name == "evaluate_experts_dev":
        return {  # every seed's experts decode the dev sets: n_tasks scales the decoding time
            "datasets": [
                plan.datasets[(wc.experiment, d["subset"], "dev")] for d in plan.devsets.get(wc.experiment, [])
            ],
            "n_tasks": len(plan.seeds),
        }
    if rule_name == "evaluate":
        return {
            "datasets": [
                plan.datasets[(wc.experiment, plan.testsets[(wc.experiment, t)]["subset"], "test")]
                for t in plan.model_testsets(wc.experiment, wc.model)
            ],
            "context_s": 30 if wc.model == N.ZEROSHOT_NATIVE else None,
        }
    if rule_name == "merge":
        spec = plan.variants[(wc.experiment, wc.variant)]
        args = {"n_experts": len(spec["experts"])}
        sel = spec.get("selection")
        if sel:
            from speechmerge.merging.grid import expand_grid, plan_grid

            groups, points = plan_grid(spec["method"], spec["hparams"], expand_grid(sel["grid"]))
            args.update(
                n_merges=len(groups),
                n_points=len(points),
                datasets=[plan.datasets[(wc.experiment, d["subset"], "dev")] for d in plan.devsets[wc.experiment]],
            )
        return args
    if rule_name == "taskvector_cosines":
        return {"n_experts": len(plan.experts[wc.experiment])}
    if rule_name in ("synthesize_corpus", "audio_checksum"):
        return {"datasets": [plan.datasets[(wc.experiment, wc.subset, wc.split)]]}
    return {}


def unset_variables(expressions, environ: Mapping[str, str] = os.environ, prefix: str = "SPEECHMERGE_") -> list[str]:
    """The ``$PREFIX...`` environment variables that resource expressions (a profile's
    ``default-resources`` / ``set-resources``) name but that are not set, sorted. Snakemake would
    pass such a reference on literally (an account called ``$SPEECHMERGE_SLURM_ACCOUNT``)."""
    names = set()
    for expr in expressions:
        names.update(re.findall(r"\$\{?(" + re.escape(prefix) + r"\w+)", str(expr)))
    return sorted(n for n in names if n not in environ)
