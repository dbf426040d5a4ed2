# Scores: Pascal VOC style mIoU over background + the configured classes, and the upper bound.


rule evaluate:
    input:
        f"{R}/predictions/pseudo_gt/pairs.csv",
    output:
        miou=f"{R}/voc_miou.txt",
        per_class=report(f"{R}/voc_per_class_iou.csv", caption="../report/per_class.rst", category="Scores"),
        confusion=f"{R}/voc_confusion.csv",
    params:
        classes=CLASSES,
        ids=IDS,
    log:
        f"{R}/logs/evaluate.log",
    benchmark:
        f"{R}/benchmarks/evaluate.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/evaluate.py"


use rule evaluate as evaluate_upper_bound with:
    input:
        f"{R}/predictions/ground_truth/pairs.csv",
    output:
        miou=f"{R}/upper_bound_miou.txt",
        per_class=report(f"{R}/upper_bound_per_class_iou.csv", caption="../report/per_class.rst", category="Scores"),
        confusion=f"{R}/upper_bound_confusion.csv",
    log:
        f"{R}/logs/evaluate_upper_bound.log",
    benchmark:
        f"{R}/benchmarks/evaluate_upper_bound.tsv"
