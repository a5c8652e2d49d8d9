"""Rule synthesize_corpus: one dataset split (experiment, subset, split) -> parquet.

input.corpus (synthesised splits): the parallel text corpus TSV; input.audio_checksum (manifest
splits): the checksum JSON of the manifest's audio, recorded in the parquet's provenance;
output[0]: the split's parquet;
params.spec: {"experiment", "subset", "language", "domain", "transforms", "split", "sentences",
"renderings", "seed", "voice_profile", "source"} with source "synth" (eSpeak NG, default),
"manifest" (+ "manifest": TSV path; "sentences" takes its first N rows), a corpus on disk (+ "root":
speechmerge.data.readers) or "covost2" | "fleurs" | "common_voice" from a hub (+ optional
"hf_name", "hf_config", "data_dir"; "sentences" caps the number of examples).
"""

from speechmerge.data.adapters import iter_manifest, load_real
from speechmerge.data.io import write_split
from speechmerge.data.synthesize import synthesize_split
from speechmerge.utils import job_spec, provenance, read_json, set_threads, setup_script_logging

log = setup_script_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821

spec = job_spec(snakemake)  # noqa: F821
source = spec.get("source", "synth")
common = {"split": spec["split"], "subset": spec["subset"]}
skipped: list[dict] = []  # clips left out with data.on_bad_audio: skip
recorded: dict = {}  # what the split's provenance adds to the spec

if source == "synth":
    records = synthesize_split(
        snakemake.input.corpus,  # noqa: F821
        language=spec["language"],
        domain_transforms=spec.get("transforms") or [],
        sentences=spec.get("sentences"),
        renderings=int(spec.get("renderings", 1)),
        seed=int(spec.get("seed", 0)),
        voice_profile=spec.get("voice_profile", "adult"),
        domain_name=spec["domain"],
        experiment=spec.get("experiment", ""),
        workers=int(snakemake.threads),  # noqa: F821
        **common,
    )
elif source == "manifest":
    records = iter_manifest(
        spec["manifest"],
        language=spec["language"],
        domain=spec["domain"],
        max_examples=spec.get("sentences"),
        on_bad_audio=spec.get("on_bad_audio", "error"),
        skipped=skipped,
        **common,
    )
elif spec.get("root"):  # the corpus as released, on disk
    from speechmerge.data.readers import get_reader
    from speechmerge.data.readers.base import speakers_to_exclude

    reader = get_reader(source)
    options = {k: spec[k] for k in reader.options if spec.get(k)}  # e.g. CoVoST 2's translations folder
    exclude = None
    if spec.get("speakers") == "disjoint":  # leave out the speakers of the later splits
        exclude = speakers_to_exclude(reader, spec["root"], spec["language"], spec["split"], **options)
        recorded["speakers"] = {"disjoint": True, "excluded_speakers": len(exclude)}
        log.info("speaker-disjoint: %d speaker(s) of later splits left out", len(exclude))
    records = reader.records(
        spec["root"],
        language=spec["language"],
        domain=spec["domain"],
        max_examples=spec.get("sentences"),
        hours=spec.get("hours"),
        seed=int(spec.get("seed", 0)),
        on_bad_audio=spec.get("on_bad_audio", "error"),
        skipped=skipped,
        exclude_speakers=exclude,
        **options,
        **common,
    )
elif source in ("covost2", "fleurs", "common_voice"):
    extra = {"data_dir": spec["data_dir"]} if spec.get("data_dir") else {}
    records = load_real(
        source,
        language=spec["language"],
        hf_name=spec.get("hf_name"),
        config=spec.get("hf_config"),
        max_examples=spec.get("sentences"),
        domain=spec["domain"],
        **common,
        **extra,
    )
else:
    raise ValueError(
        f"params.spec.source: unknown data source {source!r} (synth, manifest, covost2, fleurs, common_voice)"
    )

if getattr(snakemake.input, "audio_checksum", None):  # noqa: F821
    recorded["audio_sha256"] = read_json(snakemake.input.audio_checksum)["sha256"]  # noqa: F821
seconds = 0.0


def counted(records):
    """The records as they stream to the file, their duration summed on the way."""
    global seconds
    for rec in records:
        seconds += float(rec["duration"])
        yield rec


def finished() -> dict:
    """The split's provenance, once every record is written (the clips skipped on the way)."""
    if skipped:
        recorded["skipped_audio"] = {"n": len(skipped), "clips": skipped}
        log.warning("left out %d clip(s) (data.on_bad_audio: skip), e.g. %s", len(skipped), skipped[0])
    return provenance(config_hash=spec.get("config_hash"), spec=spec, **recorded)


n = write_split(counted(records), snakemake.output[0], provenance=finished)  # noqa: F821
log.info("wrote %d utterances (%.3f h) to %s", n, seconds / 3600, snakemake.output[0])  # noqa: F821
