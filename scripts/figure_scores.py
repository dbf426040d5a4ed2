"""Rule figure_scores: per-class IoU of the pipeline (and of the upper bound) as bars."""

from rlseg.pipeline import logged
from rlseg.report import iou_bars

snakemake = globals()["snakemake"]
inp = snakemake.input
with logged(snakemake.log[0], "figure: IoU per class") as log:
    upper = "upper_per_class" in inp.keys()
    drawn = iou_bars(inp.per_class, float(open(inp.miou).read()), snakemake.output[0],
                     upper_bound=inp.upper_per_class if upper else None,
                     upper_bound_miou=float(open(inp.upper_miou).read()) if upper else None)
    log.info("mIoU %s -> %s", drawn["miou"], snakemake.output[0])
