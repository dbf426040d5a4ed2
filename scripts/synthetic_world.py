"""Rule synthetic_world: generate the embedded offline world."""

from pathlib import Path

from rlseg.io import write_json
from rlseg.pipeline import logged
from rlseg.synthetic import WorldSpec, write_world

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "synthetic world") as log:
    spec = WorldSpec(classes=tuple(snakemake.params.classes), **snakemake.params.world)
    root = Path(snakemake.output[0]).parent
    summary = write_world(root, spec, class_ids=dict(snakemake.params.ids))
    write_json(snakemake.output[0], summary)
    log.info("world %s -> %s", summary, root)
