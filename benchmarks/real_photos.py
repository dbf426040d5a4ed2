"""The workflow on real photographs: MSRC-v2 (shared, VOC layout), measured against its upper bound.

One JSON line per figure, then a summary table and the acceptance checks of the real-photographs issue:

1. the photo recipe (``configs/photos.yaml``) on ``configs/msrc.yaml``'s data end to end (PascalSingle training
   images, ``val`` scored): pipeline mIoU and per-class IoU, over ``--seeds`` multi-class seeds (the single-class
   models and pseudo labels are shared: the seeds move only the multi-class network); the upper bound (the same
   multi-class network on the true masks of the same training images), over the same seeds; the pipeline's mIoU with
   the other inference too (one pass where the preset scores at three scales and mirrored, and the reverse); the
   pseudo labels' own per-class Jaccard on their training images against the true masks (the paper's Table 5
   measure); wall time per stage;
2. the same run with the regularized loss off (lambda_reg = 0 in every stage);
3. the same run from class folders as a web search would return them: every ``train`` image that holds the class,
   multi-class images included, negatives on;
4. a per-pixel colour classifier fitted on the true masks of the training images;
5. the single-class results on ECSSD and Weizmann Horse that ``benchmarks/single_class.py`` cached.

    python benchmarks/real_photos.py [--data ../shared/data/msrc_v2] [--work results/benchmarks/real_photos]
        [--preset configs/photos.yaml] [--config configs/msrc.yaml] [--cores 2] [--seeds 0 1 2]
        [--single-class-seeds 0 1] [--upper-bound-seeds 1] [--pseudo-labels-only] [--only main lambda_reg_0 folders]

``--single-class-seeds``: the main run's pseudo labels again with other single-class seeds (a run to the pseudo
labels each), their Jaccard reported per seed and as mean and spread. ``--upper-bound-seeds N``: the upper bound is
trained on the first N multi-class seeds only (default: all): its labels are the true masks, so a change of the
single-class method leaves it as it was measured.

Finished workflow runs are reused (Snakemake reruns nothing that is up to date).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from rlseg.baselines import colour_baseline_miou
from rlseg.eval_steps import predict_eval_set
from rlseg.evaluate import confusion, pseudo_label_jaccard, read_per_class_iou, scores
from rlseg.io import read_csv
from rlseg.settings import read_config
from rlseg.voc import class_ids, label_count

REPO = Path(__file__).resolve().parents[1]
RUNS = ("main", "lambda_reg_0", "folders")


def emit(figure: str, **values) -> dict:
    row = {"figure": figure, **values}
    print(json.dumps(row), flush=True)
    return row


SCORES = ("results/voc_miou.txt", "results/upper_bound_miou.txt")


def run_workflow(workdir: Path, configs: list[Path], override: dict, cores: int,
                 targets: tuple[str, ...] = SCORES) -> float:
    """Run the workflow to ``targets`` in ``workdir`` with ``config.yaml``, ``configs`` and ``override``; returns
    the wall time."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "override.yaml").write_text(yaml.safe_dump(override))
    t0 = time.time()
    with open(workdir / "snakemake.log", "w") as log:  # Snakemake's own output; this script prints figures only
        # the scores only: the report's figures (rule all) are drawing, not the run the wall time is about
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                               str(workdir), "--cores", str(cores), *targets, "--configfile", str(REPO / "config.yaml"),
                               *map(str, configs), str(workdir / "override.yaml")],
                              stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"the {workdir.name} run failed; see {workdir / 'snakemake.log'}")
    return time.time() - t0


def class_folders(data: Path, classes: list[str], out: Path) -> Path:
    """Class folders as a web search would fill them: every ``train`` image holding the class (from index.csv)."""
    jpegs = data / "VOCdevkit" / "VOC2012" / "JPEGImages"
    with open(data / "index.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    for cls in classes:
        folder = out / cls
        folder.mkdir(parents=True, exist_ok=True)
        for r in rows:
            if cls in r["voc_classes"].split(";"):
                target = folder / f"{r['image']}.jpg"
                if not target.exists():
                    shutil.copyfile(jpegs / f"{r['image']}.jpg", target)
    return out


def seed_copy(run: Path, name: str) -> Path:
    """A copy of a finished run (its results and Snakemake's records of them, times kept) in which another
    multi-class seed reruns only the multi-class jobs and what follows them."""
    copy = run.parent / name
    if not copy.exists():
        tmp = run.parent / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(run / "results", tmp / "results", symlinks=True)
        shutil.copytree(run / ".snakemake" / "metadata", tmp / ".snakemake" / "metadata")
        tmp.rename(copy)
    return copy


def seed_means(rows: list[dict]) -> list[dict]:
    """Mean and spread (max - min) of every figure measured on more than one seed."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if "seed" in r:
            by.setdefault(r["figure"], []).append(r["value"])
    # Jaccards are fractions (4 decimals), mIoUs percentages (2)
    return [emit(f"{k}_mean", value=round(float(np.mean(v)), 4 if "jaccard" in k else 2),
                 spread=round(float(np.ptp(v)), 4 if "jaccard" in k else 2), seeds=len(v),
                 values=v) for k, v in by.items() if len(v) > 1]


def stage_seconds(results: Path) -> dict[str, float]:
    """Job seconds per rule, summed over its per-class jobs (Snakemake's benchmark files); the two multi-class
    variants are kept apart."""
    out: dict[str, float] = {}
    bench = results / "benchmarks"
    for tsv in sorted(bench.rglob("*.tsv")):
        parts = tsv.relative_to(bench).with_suffix("").parts
        rule = "/".join(parts) if parts[0] in ("train_multiclass", "predict") else parts[0]
        with open(tsv, newline="") as fh:
            secs = float(next(csv.DictReader(fh, delimiter="\t"))["s"])
        out[rule] = round(out.get(rule, 0.0) + secs, 1)
    return out


MULTI_SCALE = (0.75, 1.0, 1.25)


def other_inference_miou(results: Path, classes: list[str], multi_scale: bool) -> tuple[float, dict[str, float]]:
    """The finished run's pseudo-label network scored again with the other inference: multi-scale + flip
    (``eval.scales`` 0.75 / 1 / 1.25, ``eval.flip``) where the run scored one pass, else one pass; its predictions
    written beside the run's own."""
    scales, flip = (MULTI_SCALE, True) if multi_scale else ((1.0,), False)
    out = results / "predictions" / ("pseudo_gt_multi_scale_flip" if multi_scale else "pseudo_gt_single_scale")
    ids = class_ids(classes)
    predict_eval_set(str(results / "multiclass" / "pseudo_gt" / "model.pt"), str(results / "eval" / "index.csv"),
                     str(out / "pairs.csv"), out, device="cpu", scales=scales, flip=flip)
    matrix = confusion([(r["mask"], r["prediction"]) for r in read_csv(out / "pairs.csv")],
                       [ids[c] for c in classes], label_count(classes))
    miou, per_class = scores(matrix, classes, [ids[c] for c in classes])
    return round(miou, 2), {r["class"]: r["iou"] for r in per_class}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "msrc_v2")
    ap.add_argument("--work", type=Path, default=Path("results/benchmarks/real_photos"))
    ap.add_argument("--preset", type=Path, default=REPO / "configs" / "photos.yaml", help="the method's settings")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "msrc.yaml", help="the data's settings")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="multi-class seeds of the main run")
    ap.add_argument("--single-class", type=Path, default=Path("results/benchmarks/single_class"),
                    help="folder of benchmarks/single_class.py's cached results")
    ap.add_argument("--single-class-seeds", type=int, nargs="+", default=[0],
                    help="single-class seeds of the main run's pseudo labels; the first is the main run's")
    ap.add_argument("--upper-bound-seeds", type=int, default=None,
                    help="train the upper bound on the first N multi-class seeds only (default: all)")
    ap.add_argument("--pseudo-labels-only", action="store_true",
                    help="run to the pseudo labels and score them; no multi-class network")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=RUNS, default=list(RUNS))
    args = ap.parse_args()
    data, work = args.data.resolve(), args.work.resolve()
    if not (data / "index.csv").is_file():
        sys.exit(f"{data}: no MSRC-v2 here (index.csv missing); pass --data")
    config = yaml.safe_load(args.config.read_text())
    classes = config["classes"]
    # how the run scores: its merged settings (config.yaml, the preset, the data's file), not one file's
    run_eval = read_config(REPO / "config.yaml", args.preset, args.config)["eval"]
    preset_multi_scale = len(run_eval["scales"]) > 1 or run_eval["flip"]
    voc = data / "VOCdevkit" / "VOC2012"
    masks = voc / "SegmentationClass"
    sources = {"images": {"root": str(data)}, "eval": {"root": str(voc)}}
    overrides = {
        "main": sources,
        "lambda_reg_0": {**sources, "single_class": {"lambda_reg": 0, "lambda_reg_anneal": 0}, "upper_bound": False},
        # a photo holding two classes sits in both folders: kept under both, never a negative of either
        "folders": {**sources, "images": {"source": "folder", "shared": "keep",
                                          "root": str(class_folders(data, classes, work / "class_folders"))},
                    "upper_bound": False},
    }
    if args.single_class_seeds[0]:  # the runs' own single-class seed; 0, the schema's, leaves their settings be
        for override in overrides.values():
            override["single_class"] = {**override.get("single_class", {}), "seed": args.single_class_seeds[0]}
    pseudo_labels = tuple(f"results/pseudo_gt/{c}/pairs.csv" for c in classes)
    rows = []
    for name in args.only:
        # a finished run is reused: its wall time is then Snakemake's check, not the run's
        reused = (work / name / (pseudo_labels[0] if args.pseudo_labels_only else SCORES[0])).is_file()
        wall = run_workflow(work / name, [args.preset, args.config], overrides[name], args.cores,
                            pseudo_labels if args.pseudo_labels_only else SCORES)
        results = work / name / "results"
        sc_seeds = args.single_class_seeds if name == "main" else args.single_class_seeds[:1]
        for sc_seed in sc_seeds:
            sc_results = results
            if sc_seed != sc_seeds[0]:
                sc_results = work / f"{name}_single_class_seed{sc_seed}" / "results"
                run_workflow(sc_results.parent, [args.preset, args.config],
                             {**overrides[name], "single_class": {**overrides[name].get("single_class", {}),
                                                                  "seed": sc_seed}},
                             args.cores, pseudo_labels)
            jac = pseudo_label_jaccard(sc_results, masks, classes, class_ids(classes))
            seed_key = {"seed": sc_seed} if len(sc_seeds) > 1 else {}
            rows.append(emit(f"{name}_pseudo_label_jaccard", value=round(float(np.mean(list(jac.values()))), 4),
                             per_class=jac, **seed_key))
        rows.append(emit(f"{name}_wall_s", value=round(wall, 1), per_stage=stage_seconds(results), reused=reused))
        seeds = [] if args.pseudo_labels_only else args.seeds if name == "main" else args.seeds[:1]
        for n, seed in enumerate(seeds):
            with_bound = args.upper_bound_seeds is None or n < args.upper_bound_seeds
            run = work / name if seed == seeds[0] else seed_copy(work / name, f"{name}_seed{seed}")
            if seed != seeds[0]:
                run_workflow(run, [args.preset, args.config], {**overrides[name], "multiclass": {"seed": seed}},
                             args.cores, SCORES if with_bound else SCORES[:1])
            for key, file in (("miou", "voc"), ("upper_bound_miou", "upper_bound"))[:2 if with_bound else 1]:
                score = run / "results" / f"{file}_miou.txt"
                if score.is_file():
                    rows.append(emit(f"{name}_{key}" if key == "miou" else key, seed=seed,
                                     value=float(score.read_text()),
                                     per_class=read_per_class_iou(run / "results" / f"{file}_per_class_iou.csv")))
            if name == "main":
                # the preset's inference is main_miou; the other one is reported beside it
                miou, per_class = other_inference_miou(run / "results", classes, multi_scale=not preset_multi_scale)
                figure = "main_miou_single_scale" if preset_multi_scale else "main_miou_multi_scale_flip"
                rows.append(emit(figure, seed=seed, value=miou, per_class=per_class))
    rows += seed_means(rows)
    main_results = work / "main" / "results"
    if (main_results / "ground_truth" / "pairs.csv").is_file():
        train = [(r["image"], r["label"]) for r in read_csv(main_results / "ground_truth" / "pairs.csv")]
        evals = [(r["image"], r["mask"]) for r in read_csv(main_results / "eval" / "index.csv")]
        ids = list(class_ids(classes).values())
        rows.append(emit("colour_classifier_miou", value=round(colour_baseline_miou(train, evals, ids), 2)))
    for f in sorted(args.single_class.glob("*.json")):
        r = json.loads(f.read_text())
        rows.append(emit(f"single_class_{f.stem}", value=r.get("f_measure"), **{k: v for k, v in r.items()
                                                                               if k != "f_measure"}))
    summary(rows)


def summary(rows: list[dict]) -> None:
    got = {r["figure"]: r for r in rows}
    print("\n| figure | value |\n|---|---|")
    for r in rows:
        if isinstance(r.get("value"), (int, float)):
            print(f"| {r['figure']} | {r['value']} |")
    v = {k: r["value"] for k, r in got.items()}
    # the checks read the mean over seeds where there is one
    for key in ("main_miou", "upper_bound_miou", "main_pseudo_label_jaccard"):
        v[key] = v.get(f"{key}_mean", v.get(key))
    v = {k: x for k, x in v.items() if x is not None}
    checks = {}
    if "main_pseudo_label_jaccard" in v:
        jac = got["main_pseudo_label_jaccard"]["per_class"]
        checks["pseudo-label Jaccard >= 0.78"] = v["main_pseudo_label_jaccard"] >= 0.78
        checks["no class's pseudo-label Jaccard below 0.55"] = min(jac.values()) >= 0.55
    if "main_miou" in v:
        checks["pipeline mIoU (mean over seeds) >= 68"] = v["main_miou"] >= 68
        if not got["main_wall_s"]["reused"]:
            checks["whole MSRC run <= 30 min"] = v["main_wall_s"] <= 1800
    if "upper_bound_miou" in v:
        checks["pipeline >= 0.88 x upper bound (means over seeds)"] = v["main_miou"] >= 0.88 * v["upper_bound_miou"]
    if "folders_pseudo_label_jaccard" in v:
        checks["class folders: pseudo-label Jaccard >= 0.75"] = v["folders_pseudo_label_jaccard"] >= 0.75
    if "lambda_reg_0_miou" in v and "main_miou" in v:
        checks["lambda_reg = 0 >= 10 points lower"] = v["lambda_reg_0_miou"] <= v["main_miou"] - 10
    if "colour_classifier_miou" in v and "main_miou" in v:
        checks["colour classifier >= 15 points lower"] = v["colour_classifier_miou"] <= v["main_miou"] - 15
    print()
    for k, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {k}")


if __name__ == "__main__":
    main()
