"""Rule figure_confusion: the evaluation's confusion matrix, rows normalised, as a heat map."""

from rlseg.pipeline import logged
from rlseg.report import confusion_heatmap

snakemake = globals()["snakemake"]
which = {"voc": "pipeline", "upper_bound": "upper bound"}[snakemake.wildcards.scores]
with logged(snakemake.log[0], f"figure: confusion matrix ({which})") as log:
    confusion_heatmap(snakemake.input[0], snakemake.output[0], f"confusion matrix, {which} (row %)")
    log.info("-> %s", snakemake.output[0])
