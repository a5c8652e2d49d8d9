# synthesize_corpus: corpus sentences -> eSpeak NG speech in an acoustic domain -> parquet split
# (or a local manifest's audio, or a hub dataset). audio_checksum: what a manifest split is made of.


def _manifest(wc):
    return PLAN.datasets[(wc.experiment, wc.subset, wc.split)].get("manifest")


def _manifest_audio(wc):
    """The manifest and every audio file it names: editing either reruns the checksum job."""
    manifest = _manifest(wc)
    if manifest is None or not os.path.isfile(manifest):
        return [manifest] if manifest else []  # a missing manifest: Snakemake names it
    return [manifest] + [str(p) for p in manifest_audio_paths(manifest)]


def _split_inputs(wc):
    """What a split is made from: the corpus (synthesised speech) or the checksum of a manifest's
    audio (a manifest split); a hub dataset is named by params only."""
    source = PLAN.datasets[(wc.experiment, wc.subset, wc.split)].get("source", "synth")
    if source == "synth":
        return {"corpus": CORPUS}
    if _manifest(wc):
        return {"audio_checksum": f"results/data/{wc.experiment}/{wc.subset}/{wc.split}.audio.json"}
    return {}


rule audio_checksum:
    input:
        _manifest_audio,
    output:
        "results/data/{experiment}/{subset}/{split}.audio.json",
    params:
        manifest=_manifest,
    log:
        "logs/audio_checksum/{experiment}/{subset}/{split}.log",
    resources:
        mem_mb=500,
        runtime=10,
    script:
        "../workflow_scripts/audio_checksum.py"


rule synthesize_corpus:
    input:
        unpack(_split_inputs),
    output:
        "results/data/{experiment}/{subset}/{split}.parquet",
    params:
        spec=lambda wc: PLAN.datasets[(wc.experiment, wc.subset, wc.split)],
    threads: THREADS.get("synthesize", 1)
    # Cheap, and every training job waits on it: before training (priority 10) and evaluation.
    priority: 20
    log:
        "logs/synthesize_corpus/{experiment}/{subset}/{split}.log",
    benchmark:
        "benchmarks/out/synthesize_corpus/{experiment}/{subset}/{split}.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../workflow_scripts/synthesize_corpus.py"
