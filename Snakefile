# rlseg: weakly supervised semantic segmentation with regularized loss (Veksler, ECCV 2020).
#   snakemake --cores 8 results/voc_miou.txt
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")

from rlseg.config import check_config  # noqa: E402

check_config(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/single_class.smk"
include: "workflow/rules/multiclass.smk"
include: "workflow/rules/evaluate.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        final_targets(),
    default_target: True
