# Data: the synthetic world, PascalSingle, per-class ingest (manifests), the evaluation set, true masks.


rule synthetic_world:
    output:
        f"{R}/world/summary.json",
    params:
        world=config["synthetic"],
        classes=CLASSES,
        ids=IDS,
    log:
        f"{R}/logs/synthetic_world.log",
    benchmark:
        f"{R}/benchmarks/synthetic_world.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/synthetic_world.py"


rule download_voc2012:
    output:
        f"{R}/voc/download/{{root_id}}.done",
    params:
        root=lambda wildcards: VOC_ROOT_BY_ID[wildcards.root_id],
    log:
        f"{R}/logs/download_voc2012/{{root_id}}.log",
    benchmark:
        f"{R}/benchmarks/download_voc2012/{{root_id}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/download_voc2012.py"


rule pascal_single:
    input:
        voc_download("images"),
    output:
        f"{R}/voc/pascal_single.csv",
    params:
        root=config["images"]["root"],
        sbd=config["images"]["sbd"],
        classes=CLASSES,
    log:
        f"{R}/logs/pascal_single.log",
    benchmark:
        f"{R}/benchmarks/pascal_single.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/pascal_single.py"


rule ingest:
    input:
        source_prepared(),
    output:
        f"{R}/images/{{cls}}/candidates.csv",
    params:
        # only what decides which files are fetched and checked: other settings never re-crawl a class
        images=ingest_settings(),
        web=config["web"] if SOURCE == "web" else {},
        results=lambda w, output: results_dir(output[0], 2),
    log:
        f"{R}/logs/ingest/{{cls}}.log",
    benchmark:
        f"{R}/benchmarks/ingest/{{cls}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/ingest.py"


rule manifests:
    input:
        expand(f"{R}/images/{{cls}}/candidates.csv", cls=CLASSES),
    output:
        expand(f"{R}/images/{{cls}}/manifest.csv", cls=CLASSES),
    params:
        classes=CLASSES,
        near_duplicate_bits=config["images"]["near_duplicate_bits"],
        min_images=config["images"]["min_images"],
        shared=config["images"]["shared"],
    log:
        f"{R}/logs/manifests.log",
    benchmark:
        f"{R}/benchmarks/manifests.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/manifests.py"


rule eval_set:
    input:
        world_flag(),
        voc_download("eval"),
    output:
        f"{R}/eval/index.csv",
    params:
        # which images are scored, not how: a change of eval.scales or eval.flip reruns the predictions only
        eval={k: config["eval"][k] for k in ("source", "root", "split")},
        results=lambda w, output: results_dir(output[0], 1),
        classes=CLASSES,
    log:
        f"{R}/logs/eval_set.log",
    benchmark:
        f"{R}/benchmarks/eval_set.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/eval_set.py"


rule true_masks:
    input:
        manifests(),
        source_prepared(),
    output:
        f"{R}/ground_truth/pairs.csv",
    params:
        source=SOURCE,
        results=lambda w, output: results_dir(output[0], 1),
        classes=CLASSES,
        ids=IDS,
    log:
        f"{R}/logs/true_masks.log",
    benchmark:
        f"{R}/benchmarks/true_masks.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/true_masks.py"
