"""Rules evaluate / evaluate_upper_bound: mIoU over background + the configured classes, and the confusion matrix."""

from rlseg.evaluate import confusion, scores, write_confusion, write_scores
from rlseg.io import read_csv
from rlseg.pipeline import logged
from rlseg.voc import label_count

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "evaluate") as log:
    rows = read_csv(snakemake.input[0])
    classes = list(snakemake.params.classes)
    ids = [int(snakemake.params.ids[c]) for c in classes]
    matrix = confusion([(r["mask"], r["prediction"]) for r in rows], ids, label_count(classes))
    miou, per_class = scores(matrix, classes, ids)
    write_scores(miou, per_class, snakemake.output.miou, snakemake.output.per_class)
    write_confusion(snakemake.output.confusion, matrix, classes)
    log.info("mIoU %.2f over %d images -> %s", miou, len(rows), snakemake.output.miou)
