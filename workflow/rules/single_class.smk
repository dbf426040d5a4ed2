# Single-class U-Nets trained with the regularized loss, and the pseudo ground truth they produce.


rule train_base_model:
    input:
        manifests=base_manifests(),
    output:
        f"{R}/base_model/model_final.pt",
        history=f"{R}/base_model/history.csv",
    params:
        base=base_model_params(),
        single_class=config["single_class"],
        results=lambda w, output: results_dir(output[0], 1),
    log:
        f"{R}/logs/train_base_model.log",
    benchmark:
        f"{R}/benchmarks/train_base_model.tsv"
    priority: pipeline_first
    # a failed or preempted job resumes from its last epoch's checkpoint
    retries: 2
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=1,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/train_base_model.py"


# pseudo_gt.cam_filter: every class's mean ImageNet scores, so that each class's labelling knows which ImageNet
# classes tell its photos from the others'; single_class.center imagenet reads them too
CAM = config["pseudo_gt"]["cam_params"] if config["pseudo_gt"]["cam_filter"] else None
CAM_SCORES = expand(f"{R}/imagenet_scores/{{cls}}.npy", cls=CLASSES) if CAM else []


CENTRE_SCORES = (
    expand(f"{R}/imagenet_scores/{{cls}}.npy", cls=CLASSES) if config["single_class"]["center"] == "imagenet" else []
)


rule train_single_class:
    input:
        manifest=f"{R}/images/{{cls}}/manifest.csv",
        manifests=manifests(),
        base=base_model,
        scores=CENTRE_SCORES,
    output:
        model=f"{R}/single_class/{{cls}}/model_final.pt",
        history=f"{R}/single_class/{{cls}}/history.csv",
    params:
        single_class=config["single_class"],
        classes=CLASSES,
        ids=IDS,
        negatives_dir=str(SRC.negatives_dir(Path(R))) if SRC.negatives_dir else None,
        masks_dir=str(SRC.monitor_masks_dir(Path(R))) if SRC.monitor_masks_dir else None,
        near_duplicate_bits=config["images"]["near_duplicate_bits"],
        top_classes=config["pseudo_gt"]["cam_params"]["top_classes"],
    log:
        f"{R}/logs/train_single_class/{{cls}}.log",
    benchmark:
        f"{R}/benchmarks/train_single_class/{{cls}}.tsv"
    priority: pipeline_first
    # a failed or preempted job resumes from its last epoch's checkpoint
    retries: 2
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=1,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/train_single_class.py"


rule imagenet_scores:
    input:
        f"{R}/images/{{cls}}/manifest.csv",
    output:
        f"{R}/imagenet_scores/{{cls}}.npy",
    log:
        f"{R}/logs/imagenet_scores/{{cls}}.log",
    benchmark:
        f"{R}/benchmarks/imagenet_scores/{{cls}}.tsv"
    priority: pipeline_first
    threads: imagenet_threads
    # one classifier pass a photo: a CPU job, which takes no GPU slot from the class CNNs
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/imagenet_scores.py"


rule pseudo_gt:
    input:
        model=f"{R}/single_class/{{cls}}/model_final.pt",
        manifest=f"{R}/images/{{cls}}/manifest.csv",
        scores=CAM_SCORES,
    output:
        f"{R}/pseudo_gt/{{cls}}/pairs.csv",
    params:
        ids=IDS,
        batch_size=32,
        resolution=config["pseudo_gt"]["resolution"],
        scales=config["pseudo_gt"]["scales"],
        flip=config["pseudo_gt"]["flip"],
        crf=config["pseudo_gt"]["crf_params"] if config["pseudo_gt"]["crf"] else None,
        cam=CAM,
        classes=CLASSES,
    log:
        f"{R}/logs/pseudo_gt/{{cls}}.log",
    benchmark:
        f"{R}/benchmarks/pseudo_gt/{{cls}}.tsv"
    priority: pipeline_first
    threads: config["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/pseudo_gt.py"


# The class CNN as `rlseg predict` reads it: the trained model with the run's labelling recorded (pseudo_gt's
# resolution, scales and flip, and the ImageNet classes of its cam_filter), so that
# `rlseg predict results/models/CLS.pt photos/` labels as the run did; a copy, so that a labelling change rewrites
# it without retraining the class.
rule export_model:
    input:
        model=f"{R}/single_class/{{cls}}/model_final.pt",
        scores=CAM_SCORES,
    output:
        f"{R}/models/{{cls}}.pt",
    params:
        labelling=labelling_of(config["pseudo_gt"]),
        cam=CAM,
        classes=CLASSES,
    log:
        f"{R}/logs/export_model/{{cls}}.log",
    benchmark:
        f"{R}/benchmarks/export_model/{{cls}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/export_model.py"


# Not part of `all`: the objectness decoder that ships with rlseg (base_model.source: packaged), exported from a
# base model trained on configs/objectness.yaml's photographs; docs/workflow.md says how to install it.
rule packaged_start:
    input:
        model=f"{R}/base_model/model_final.pt",
        history=f"{R}/base_model/history.csv",
    output:
        multiext(f"{R}/packaged_start/{PACKAGED_STEM}", ".pt", ".json"),
    params:
        single_class=config["single_class"],
    log:
        f"{R}/logs/packaged_start.log",
    benchmark:
        f"{R}/benchmarks/packaged_start.tsv"
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/package_start.py"
