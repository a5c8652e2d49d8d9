"""Rule audio_checksum: SHA-256 of a manifest split's manifest and audio files, as JSON.

input: the manifest and the audio files it names; output[0]: the checksum JSON, an input of the
split's synthesize_corpus job (which records it), so that a changed audio file rebuilds the split;
params.manifest: the manifest path.
"""

from speechmerge.data.adapters import audio_checksums
from speechmerge.utils import setup_script_logging, write_json

log = setup_script_logging(snakemake.log[0])  # noqa: F821

sums = audio_checksums(snakemake.params.manifest)  # noqa: F821
write_json(snakemake.output[0], sums)  # noqa: F821
log.info("%s: %d audio files, sha256 %s", sums["manifest"], len(sums["files"]), sums["sha256"])
