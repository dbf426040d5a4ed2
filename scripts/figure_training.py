"""Rule figure_training: one single-class (or the base) model's loss terms, sigma and accuracy over its epochs."""

from rlseg.pipeline import logged
from rlseg.report import training_curves

snakemake = globals()["snakemake"]
model = snakemake.wildcards.model
with logged(snakemake.log[0], f"figure: training of {model}") as log:
    stages = training_curves(snakemake.input[0], snakemake.output[0], f"training: {model.replace('_', ' ')}")
    log.info("stages %s -> %s", ", ".join(stages), snakemake.output[0])
