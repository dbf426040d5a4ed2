"""Rule pseudo_gt: the class's CNN labels the class's own images."""

from rlseg.pipeline import logged, make_pseudo_gt, setup_job

snakemake = globals()["snakemake"]
cls = snakemake.wildcards.cls
with logged(snakemake.log[0], f"pseudo ground truth {cls}") as log:
    setup_job(snakemake.threads, snakemake.config["precision"], snakemake.config["share_cpus"])
    cam = None
    if snakemake.params.cam is not None:
        from rlseg.cam import cam_filter_of, class_names

        cam = cam_filter_of(cls, snakemake.params.classes, snakemake.input.scores, **snakemake.params.cam)
        log.info("%s: parts of its labels kept where ImageNet's %s respond", cls, " / ".join(class_names(cam.classes)))
    make_pseudo_gt(snakemake.input.model, snakemake.input.manifest, int(snakemake.params.ids[cls]),
                   snakemake.output[0], device=snakemake.config["device"], batch_size=snakemake.params.batch_size,
                   resolution=snakemake.params.resolution, crf=snakemake.params.crf,
                   scales=snakemake.params.scales, flip=snakemake.params.flip, cam=cam)
