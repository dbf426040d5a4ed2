"""Rule packaged_start: the base model's decoder, exported as the packaged start (rlseg.packaged)."""

import logging
from pathlib import Path

from rlseg.ingest import used_paths
from rlseg.io import read_csv
from rlseg.packaged import export_start
from rlseg.pipeline import logged

snakemake = globals()["snakemake"]
with logged(snakemake.log[0], "packaged start"):
    model = Path(snakemake.input.model)
    out = export_start(model, dict(snakemake.params.single_class), read_csv(snakemake.input.history),
                       used_paths(model.parent / "manifest.csv"), Path(snakemake.output[0]).parent)
    logging.getLogger("rlseg").info("packaged start -> %s and %s", out, out.with_suffix(".json").name)
