"""Rule figure_gallery: a class's images next to its pseudo labels, the multi-class prediction and the truth."""

from rlseg.gallery import class_gallery_rows
from rlseg.pipeline import logged, setup_job
from rlseg.report import gallery

snakemake = globals()["snakemake"]
inp, cls = snakemake.input, snakemake.wildcards.cls
with logged(snakemake.log[0], f"figure: gallery of {cls}") as log:
    setup_job(snakemake.threads, snakemake.config["precision"], snakemake.config["share_cpus"])
    rows = class_gallery_rows(int(snakemake.params.ids[cls]), inp.class_model, inp.multiclass_model,
                              inp.pseudo_pairs, inp.index, inp.predictions, inp.get("truth"),
                              snakemake.params.images, device=snakemake.config["device"],
                              resolution=snakemake.params.resolution, scales=snakemake.params.scales,
                              flip=snakemake.params.flip)
    gallery(rows, snakemake.output[0], f"{cls}: training images, then evaluation images that hold it")
    log.info("%d rows -> %s", len(rows), snakemake.output[0])
