# Figures for Snakemake's report (snakemake --report results/report.html), drawn from what the run wrote.


rule figure_scores:
    input:
        unpack(score_files),
    output:
        report(
            f"{R}/figures/iou_per_class.svg",
            caption="../report/iou_per_class.rst",
            category="Scores",
        ),
    log:
        f"{R}/logs/figures/iou_per_class.log",
    benchmark:
        f"{R}/benchmarks/figures/iou_per_class.tsv"
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/figure_scores.py"


rule figure_confusion:
    input:
        f"{R}/{{scores}}_confusion.csv",
    output:
        report(
            f"{R}/figures/confusion_{{scores}}.svg",
            caption="../report/confusion.rst",
            category="Scores",
        ),
    log:
        f"{R}/logs/figures/confusion_{{scores}}.log",
    benchmark:
        f"{R}/benchmarks/figures/confusion_{{scores}}.tsv"
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/figure_confusion.py"


rule figure_training:
    input:
        history_file,
    output:
        report(
            f"{R}/figures/training/{{model}}.svg",
            caption="../report/training.rst",
            category="Training",
            labels={"model": "{model}"},
        ),
    log:
        f"{R}/logs/figures/training/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/figures/training/{{model}}.tsv"
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/figure_training.py"


rule figure_gallery:
    input:
        unpack(gallery_inputs),
    output:
        report(
            f"{R}/figures/gallery/{{cls}}.png",
            caption="../report/gallery.rst",
            category="Gallery",
            labels={"class": "{cls}"},
        ),
    params:
        ids=IDS,
        images=config["report"]["gallery_images"],
        resolution=config["pseudo_gt"]["resolution"],
        scales=config["pseudo_gt"]["scales"],
        flip=config["pseudo_gt"]["flip"],
    log:
        f"{R}/logs/figures/gallery/{{cls}}.log",
    benchmark:
        f"{R}/benchmarks/figures/gallery/{{cls}}.tsv"
    threads: config["threads"]
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/figure_gallery.py"


rule figure_manifests:
    input:
        manifests(),
    output:
        report(
            f"{R}/figures/images_per_class.svg",
            caption="../report/images_per_class.rst",
            category="Data",
        ),
    log:
        f"{R}/logs/figures/images_per_class.log",
    benchmark:
        f"{R}/benchmarks/figures/images_per_class.tsv"
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/figure_manifests.py"


rule loss_study:
    input:
        truth=f"{R}/ground_truth/pairs.csv",
        manifests=manifests(),
    output:
        f"{R}/study/loss_accuracy.csv",
    params:
        classes=CLASSES,
        ids=IDS,
        study=config["loss_study"],
        single_class=config["single_class"],
    log:
        f"{R}/logs/loss_study.log",
    benchmark:
        f"{R}/benchmarks/loss_study.tsv"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=1,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/loss_study.py"


rule figure_loss_study:
    input:
        f"{R}/study/loss_accuracy.csv",
    output:
        report(
            f"{R}/figures/loss_accuracy.svg",
            caption="../report/loss_accuracy.rst",
            category="Loss study",
        ),
    log:
        f"{R}/logs/figures/loss_accuracy.log",
    benchmark:
        f"{R}/benchmarks/figures/loss_accuracy.tsv"
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/figure_loss_study.py"
