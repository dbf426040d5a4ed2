"""Rule export_model: a class's CNN with the run's labelling recorded, as ``rlseg predict`` reads it."""

from rlseg.checkpoint import copy_weights
from rlseg.pipeline import logged

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], f"export model {snakemake.wildcards.cls}") as log:
    copy_weights(snakemake.input[0], snakemake.output[0], labelling=dict(snakemake.params.labelling))
    log.info("%s with labelling %s -> %s", snakemake.input[0], dict(snakemake.params.labelling), snakemake.output[0])
