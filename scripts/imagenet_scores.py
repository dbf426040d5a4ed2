"""Rule imagenet_scores: the ImageNet classifier's mean class scores over a class's images (pseudo_gt.cam_filter)."""

from rlseg.pipeline import logged, setup_job

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], f"imagenet scores {snakemake.wildcards.cls}") as log:
    setup_job(snakemake.threads, snakemake.config["precision"], snakemake.config["share_cpus"])
    from rlseg.cam import write_mean_scores  # torch: after setup_job has set its threads

    n = write_mean_scores(snakemake.input[0], snakemake.output[0], "cpu")
    log.info("mean ImageNet scores of %d images -> %s", n, snakemake.output[0])
