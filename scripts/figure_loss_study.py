"""Rule figure_loss_study: the paper's Fig. 1 and Table 1 (Pearson r) from the study's rows."""

from rlseg.pipeline import logged
from rlseg.report import loss_accuracy_scatter

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "figure: loss against accuracy") as log:
    table = loss_accuracy_scatter(snakemake.input[0], snakemake.output[0])
    for loss, by_set in table.items():
        log.info("%s: Pearson r %s", loss, {k: round(v, 3) for k, v in by_set.items()})
    log.info("-> %s", snakemake.output[0])
