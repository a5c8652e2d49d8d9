"""Rule merge: one method with its hyperparameters over an experiment's task vectors.

input.base: θ₀'s model.safetensors; input.task_vectors: one file per expert, in spec["experts"]
order; for a dev-selected variant also input.model (the architecture's config.json),
input.devsets (dev splits, in spec["selection"]["devsets"] order) and, for NP, input.reference
(the experts' dev scores). output.weights: merged θ (safetensors, base dtype); output.info: JSON
(method, hparams, experts, variant, seed, wall time, peak RSS, provenance; the dev curve and the
chosen point under "selection"). params.spec: speechmerge.plan.Plan.merge_spec.
"""

from speechmerge.allocator import keep_freed_memory
from speechmerge.devices import job_device
from speechmerge.merging import get_method
from speechmerge.merging.engine import merge_files, on_device, peak_rss_mb
from speechmerge.utils import job_spec, provenance, read_json, set_threads, setup_script_logging, write_json

log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821
log.info("freed memory kept for reuse: %s", keep_freed_memory())

spec = job_spec(snakemake)  # noqa: F821
inp = snakemake.input  # noqa: F821
task_vectors = list(inp.task_vectors)
experts = list(spec["experts"])
if len(experts) != len(task_vectors):
    raise ValueError(f"merge {spec['variant']}: {len(task_vectors)} task vectors for experts {experts}")
method = get_method(spec["method"], spec.get("hparams") or {})
prov = provenance(config_hash=spec.get("config_hash"))
meta = {"experts": experts, "variant": spec["variant"], "provenance": prov}
# merging.device: the SVD / Newton-Schulz methods factorise each tensor there (else the CPU)
device = job_device(spec.get("device"), jobs_per_gpu=int(spec.get("jobs_per_gpu", 1)))
if device.type != "cpu":
    log.info("merging on %s (%s)", device, "this method" if method.device_capable else "not this method: CPU")
    meta["device"] = str(device)
sel = spec.get("selection")


def merge():
    """The merge the spec asks for: a dev-selected grid, or the variant's own hyperparameters."""
    if not sel:
        log.info("merge %s: %r over %s", spec["variant"], method, experts)
        return merge_files(
            inp.base,
            task_vectors,
            method,
            snakemake.output.weights,  # noqa: F821
            seed=int(spec.get("seed", 0)),
            metadata=meta,
        )
    from speechmerge.evaluation.selection import reference_values, select_merge

    devsets = [{**d, "path": p} for d, p in zip(sel["devsets"], inp.devsets)]
    if len(devsets) != len(sel["devsets"]) or len(list(inp.devsets)) != len(sel["devsets"]):
        raise ValueError(f"merge {spec['variant']}: {len(inp.devsets)} dev files for {len(sel['devsets'])} dev sets")
    log.info("merge %s: %s over %s, grid %s chosen on dev by %s", spec["variant"], spec["method"], experts,
             sel["grid"], sel["metric"])  # fmt: skip
    return select_merge(
        base_weights=inp.base,
        task_vectors=task_vectors,
        method=spec["method"],
        hparams=spec.get("hparams") or {},
        grid=sel["grid"],
        metric=sel["metric"],
        model_dir=inp.model,
        devsets=devsets,
        out_path=snakemake.output.weights,  # noqa: F821
        experiment=spec.get("experiment"),
        variant=spec["variant"],
        reference=reference_values(read_json(inp.reference), experts) if sel["metric"] == "np" else None,
        seed=int(spec.get("seed", 0)),
        decoding=sel.get("decoding"),
        metadata=meta,
    )


with on_device(device):
    info = merge()
info.update(variant=spec["variant"], experts=experts, peak_rss_mb=round(peak_rss_mb(), 1), provenance=prov)
write_json(snakemake.output.info, info)  # noqa: F821
log.info("merged %d tensors in %.1f s, peak RSS %.0f MB", info["n_tensors"], info["wall_s"], info["peak_rss_mb"])
