"""Model merging: one method per module in ``methods/``, one registry, one streaming engine."""

from speechmerge.merging.base import REGISTRY, MergeMethod, TensorContext, get_method, is_matrix, register

__all__ = ["REGISTRY", "MergeMethod", "TensorContext", "get_method", "is_matrix", "register"]
