"""Rule predict: the multi-class network labels every evaluation image at full resolution (eval.scales, eval.flip)."""

from pathlib import Path

from rlseg.eval_steps import predict_eval_set
from rlseg.pipeline import logged, setup_job

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], f"predict ({snakemake.wildcards.variant})"):
    setup_job(snakemake.threads, snakemake.config["precision"], snakemake.config["share_cpus"])
    predict_eval_set(snakemake.input.model, snakemake.input.index, snakemake.output[0],
                     outdir=Path(snakemake.output[0]).parent, device=snakemake.config["device"],
                     scales=list(snakemake.params.scales), flip=snakemake.params.flip)
