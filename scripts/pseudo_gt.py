"""Rule pseudo_gt: the class's CNN labels the class's own images."""

from rlseg.pipeline import logged, make_pseudo_gt, setup_job

snakemake = globals()["snakemake"]
cls = snakemake.wildcards.cls
with logged(snakemake.log[0], f"pseudo ground truth {cls}"):
    setup_job(snakemake.threads, snakemake.config["precision"], snakemake.config["share_cpus"])
    make_pseudo_gt(snakemake.input.model, snakemake.input.manifest, int(snakemake.params.ids[cls]),
                   snakemake.output[0], device=snakemake.config["device"], batch_size=snakemake.params.batch_size,
                   resolution=snakemake.params.resolution, crf=snakemake.params.crf,
                   scales=snakemake.params.scales, flip=snakemake.params.flip)
