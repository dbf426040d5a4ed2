"""Rule train_base_model: the model every class's normal stage starts from (the paper: Oxford-IIIT Pet)."""

from pathlib import Path

from rlseg.pipeline import logged, run_base_model, setup_job

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "train base model"):
    setup_job(snakemake.threads, snakemake.config["precision"], snakemake.config["share_cpus"])
    run_base_model(dict(snakemake.params.base), dict(snakemake.params.single_class), snakemake.params.results,
                   model_out=snakemake.output[0], history_out=snakemake.output.history,
                   outdir=str(Path(snakemake.output[0]).parent), device=snakemake.config["device"],
                   manifests=list(snakemake.input.manifests))
