"""Rule predict: the multi-class network labels every evaluation image (single scale, full resolution)."""

from pathlib import Path

from rlseg.pipeline import logged, predict_eval_set, setup_job

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], f"predict ({snakemake.wildcards.variant})"):
    setup_job(snakemake.threads, snakemake.config["precision"])
    predict_eval_set(snakemake.input.model, snakemake.input.index, snakemake.output[0],
                     outdir=Path(snakemake.output[0]).parent, device=snakemake.config["device"])
