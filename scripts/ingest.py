"""Rule ingest: check one class's images and write its manifest."""

from rlseg.pipeline import ingest_class, logged

snakemake = globals()["snakemake"]
cls = snakemake.wildcards.cls
with logged(snakemake.log[0], f"ingest {cls}"):
    ingest_class(cls, dict(snakemake.params.images), dict(snakemake.params.web), snakemake.params.results,
                 snakemake.output[0])
