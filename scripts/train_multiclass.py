"""Rule train_multiclass: DeepLab on the pseudo ground truth (or on true masks, for the upper bound)."""

from pathlib import Path

from rlseg.pipeline import logged, run_multiclass, setup_job

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], f"train multi-class ({snakemake.wildcards.variant})"):
    setup_job(snakemake.threads, snakemake.config["precision"], snakemake.config["share_cpus"])
    run_multiclass(
        pair_files=list(snakemake.input),
        ids=dict(snakemake.params.ids),
        settings=dict(snakemake.params.multiclass),
        model_out=snakemake.output.model,
        history_out=snakemake.output.history,
        checkpoint=str(Path(snakemake.output.model).with_name("checkpoint.pt")),
        device=snakemake.config["device"],
    )
