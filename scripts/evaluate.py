"""Rules evaluate / evaluate_upper_bound: mIoU over background + the configured classes."""

from rlseg.evaluate import evaluate_predictions, write_scores
from rlseg.ingest import read_manifest
from rlseg.pipeline import logged

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "evaluate") as log:
    rows = read_manifest(snakemake.input[0])
    classes = list(snakemake.params.classes)
    ids = [int(snakemake.params.ids[c]) for c in classes]
    miou, per_class = evaluate_predictions([(r["mask"], r["prediction"]) for r in rows], classes, ids)
    write_scores(miou, per_class, snakemake.output.miou, snakemake.output.per_class)
    log.info("mIoU %.2f over %d images -> %s", miou, len(rows), snakemake.output.miou)
