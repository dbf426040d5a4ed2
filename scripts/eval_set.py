"""Rule eval_set: resolve the evaluation set (synthetic, voc2012 or a VOC-layout folder) into an index."""

from rlseg.eval_steps import resolve_eval_set
from rlseg.pipeline import logged

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "evaluation set"):
    resolve_eval_set(dict(snakemake.params.eval), snakemake.params.results, snakemake.output[0],
                     snakemake.params.classes)
