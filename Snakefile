# rlseg: weakly supervised semantic segmentation with regularized loss (Veksler, ECCV 2020).
#   snakemake --cores 8 results/voc_miou.txt
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("8.0")

# the package beside the workflow, for this process and (Snakemake passes sys.path on) every rule's script, also
# inside envs/rlseg.yaml, which cannot install it: Snakemake builds that environment away from this folder
sys.path.insert(0, str(Path(workflow.basedir) / "src"))


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")

from rlseg.config import check_config  # noqa: E402

check_config(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/single_class.smk"
include: "workflow/rules/multiclass.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


# seconds-long rules would each wait in a cluster queue; the rules that may download (web search, VOC, SBD) need
# the internet, which compute nodes often lack: all of them run on the submitting machine
localrules:
    synthetic_world,
    ingest,
    manifests,
    download_voc2012,
    pascal_single,
    eval_set,
    true_masks,
    export_model,
    evaluate,
    evaluate_upper_bound,
    figure_scores,
    figure_confusion,
    figure_training,
    figure_manifests,
    figure_loss_study,


rule all:
    input:
        final_targets(),
    default_target: True
