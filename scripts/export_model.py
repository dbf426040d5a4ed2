"""Rule export_model: a class's CNN with the run's labelling recorded, as ``rlseg predict`` reads it."""

from rlseg.checkpoint import copy_weights
from rlseg.pipeline import logged

snakemake = globals()["snakemake"]
cls = snakemake.wildcards.cls
with logged(snakemake.log[0], f"export model {cls}") as log:
    labelling = dict(snakemake.params.labelling)
    if snakemake.params.cam is not None:
        from rlseg.cam import cam_filter_of

        cam = cam_filter_of(cls, snakemake.params.classes, snakemake.input.scores, **snakemake.params.cam)
        labelling.update(cam_classes=list(cam.classes), cam_min_ratio=cam.min_ratio)
    copy_weights(snakemake.input.model, snakemake.output[0], labelling=labelling)
    log.info("%s with labelling %s -> %s", snakemake.input.model, labelling, snakemake.output[0])
