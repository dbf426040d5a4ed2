"""Rule loss_study: the paper's loss-accuracy study on the classes' images that have true masks."""

from pathlib import Path

from rlseg.pipeline import logged, setup_job
from rlseg.study import run_loss_study

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "loss-accuracy study") as log:
    setup_job(snakemake.threads, snakemake.config["precision"], snakemake.config["share_cpus"])
    rows = run_loss_study(snakemake.input.truth, {Path(m).parent.name: m for m in snakemake.input.manifests},
                          dict(snakemake.params.ids), dict(snakemake.params.study),
                          dict(snakemake.params.single_class), snakemake.output[0], device=snakemake.config["device"])
    log.info("%d rows -> %s", len(rows), snakemake.output[0])
