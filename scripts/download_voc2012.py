"""Rule download_voc2012: Pascal VOC 2012 into one folder, once, for every rule that reads it."""

from rlseg.pipeline import logged
from rlseg.voc import prepare_voc2012

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "Pascal VOC 2012") as log:
    voc = prepare_voc2012(snakemake.params.root, snakemake.output[0])
    log.info("VOC 2012 at %s -> %s", voc, snakemake.output[0])
