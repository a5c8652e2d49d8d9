"""Fine-tuning Whisper: full, BitFit, LoRA, AdaLoRA (peft), S2-LoRA; task vectors.

Public API: ``train(spec, base_dir, train_paths, dev_paths, out_dir)`` -> train_info dict;
``task_vector(model_weights, base_weights, out_path, metadata)``.
"""

from speechmerge.training.spec import TrainSpec
from speechmerge.training.taskvector import apply_task_vector, task_vector
from speechmerge.training.trainer import TrainingDiverged, train

__all__ = ["train", "TrainSpec", "TrainingDiverged", "task_vector", "apply_task_vector"]
