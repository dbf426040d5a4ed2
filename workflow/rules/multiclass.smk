# The multi-class network: trained on the pseudo ground truth, or on true masks for the upper bound.


rule train_multiclass:
    input:
        training_pairs,
    output:
        model=f"{R}/multiclass/{{variant}}/model.pt",
        history=f"{R}/multiclass/{{variant}}/history.csv",
    params:
        multiclass=multiclass_settings(),
        ids=IDS,
    log:
        f"{R}/logs/train_multiclass/{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/train_multiclass/{{variant}}.tsv"
    # a failed or preempted job resumes from its last epoch's checkpoint
    retries: 2
    priority: pipeline_first
    threads: multiclass_threads
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=1,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/train_multiclass.py"


rule predict:
    input:
        model=f"{R}/multiclass/{{variant}}/model.pt",
        index=f"{R}/eval/index.csv",
    output:
        f"{R}/predictions/{{variant}}/pairs.csv",
    params:
        scales=config["eval"]["scales"],
        flip=config["eval"]["flip"],
    log:
        f"{R}/logs/predict/{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/predict/{{variant}}.tsv"
    priority: pipeline_first
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    conda:
        "../../envs/rlseg.yaml"
    script:
        "../../scripts/predict.py"
