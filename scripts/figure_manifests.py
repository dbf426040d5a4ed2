"""Rule figure_manifests: per class, the collected images used and skipped by reason."""

from pathlib import Path

from rlseg.pipeline import logged
from rlseg.report import manifest_summary

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "figure: images per class") as log:
    counts = manifest_summary({Path(m).parent.name: m for m in snakemake.input}, snakemake.output[0])
    log.info("%s -> %s", {c: dict(n) for c, n in counts.items()}, snakemake.output[0])
