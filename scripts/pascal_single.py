"""Rule pascal_single: the single-class images of the augmented Pascal training set (never VOC 2012 val)."""

from rlseg.pipeline import logged
from rlseg.voc import write_pascal_single

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "PascalSingle"):
    write_pascal_single(snakemake.params.root, list(snakemake.params.classes), snakemake.output[0],
                        use_sbd=snakemake.params.sbd)
