"""Rule true_masks: (image, true mask) pairs of the training images, for the upper bound."""

from rlseg.eval_steps import true_mask_pairs
from rlseg.pipeline import logged

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "true masks"):
    true_mask_pairs(snakemake.params.source, list(snakemake.input), snakemake.params.results, snakemake.output[0])
