"""Rule train_single_class: the class's U-Net through annealing (or the base model), normal, transfer and
negative stages."""

from pathlib import Path

from rlseg.pipeline import logged, run_single_class, setup_job

snakemake = globals()["snakemake"]
cls = snakemake.wildcards.cls
with logged(snakemake.log[0], f"train single-class {cls}"):
    setup_job(snakemake.threads, snakemake.config["precision"], snakemake.config["share_cpus"])
    run_single_class(
        cls,
        manifest=snakemake.input.manifest,
        all_manifests=list(snakemake.input.manifests),
        classes=snakemake.params.classes,
        ids=dict(snakemake.params.ids),
        settings=dict(snakemake.params.single_class),
        outdir=str(Path(snakemake.output.model).parent),
        model_out=snakemake.output.model,
        history_out=snakemake.output.history,
        base=snakemake.input.base[0] if snakemake.input.base else None,
        negatives_dir=snakemake.params.negatives_dir,
        masks_dir=snakemake.params.masks_dir,
        device=snakemake.config["device"],
        near_duplicate_bits=snakemake.params.near_duplicate_bits,
        score_paths=list(snakemake.input.scores),
        top_classes=snakemake.params.top_classes,
    )
