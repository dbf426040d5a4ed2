"""Rule manifests: every class's manifest from its candidates (near-duplicates dropped across classes)."""

from rlseg.pipeline import finalize, logged

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "manifests"):
    finalize(list(snakemake.input), list(snakemake.output), list(snakemake.params.classes),
             snakemake.params.near_duplicate_bits, snakemake.params.min_images, snakemake.params.shared)
