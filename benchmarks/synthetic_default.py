"""The offline default's acceptance numbers, in one run on this machine.

1. the default workflow (``config.yaml``): voc_miou, upper_bound_miou, per-class IoU and wall time;
2. the same run with the regularized loss switched off (lambda_reg = 0 in every stage): the method must matter;
3. a per-pixel colour classifier fitted on the true masks of the training images, scored on the same
   evaluation images: the world must need shape and texture, not colour alone.

    python benchmarks/synthetic_default.py [--work results/benchmarks/synthetic] [--cores 8]

Finished workflow runs are reused (Snakemake reruns nothing that is up to date).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from rlseg.baselines import colour_baseline_miou
from rlseg.evaluate import read_per_class_iou
from rlseg.io import read_csv

REPO = Path(__file__).resolve().parents[1]
REFERENCE_MIOU = 76.18  # issue 14's baseline of this world


def run_workflow(workdir: Path, cores: int, extra_config: dict | None = None, *targets: str) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    configs = [str(REPO / "config.yaml")]
    if extra_config:
        (workdir / "override.yaml").write_text(yaml.safe_dump(extra_config))
        configs.append(str(workdir / "override.yaml"))
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
                    "--cores", str(cores), *targets, "--configfile", *configs], check=True)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("results/benchmarks/synthetic"))
    ap.add_argument("--cores", type=int, default=8, help="as the README's command (Snakemake's job slots)")
    args = ap.parse_args()
    default_dir, ablation_dir = args.work / "default", args.work / "lambda_reg_0"
    # the README's first command first (its wall time is the speed figure), then the rest of rule all
    wall_miou = run_workflow(default_dir, args.cores, None, "results/voc_miou.txt")
    wall = wall_miou + run_workflow(default_dir, args.cores)
    wall0 = run_workflow(ablation_dir, args.cores, {"single_class": {"lambda_reg": 0, "lambda_reg_anneal": 0},
                                                   "upper_bound": False})
    r, r0 = default_dir / "results", ablation_dir / "results"
    miou = float((r / "voc_miou.txt").read_text())
    upper = float((r / "upper_bound_miou.txt").read_text())
    miou0 = float((r0 / "voc_miou.txt").read_text())
    train = [(default_dir / x["image"], default_dir / x["label"]) for x in read_csv(r / "ground_truth/pairs.csv")]
    evals = [(default_dir / x["image"], default_dir / x["mask"]) for x in read_csv(r / "eval/index.csv")]
    classes = yaml.safe_load((REPO / "config.yaml").read_text())["classes"]
    colour = colour_baseline_miou(train, evals, list(range(1, len(classes) + 1)))
    pc, ub = read_per_class_iou(r / "voc_per_class_iou.csv"), read_per_class_iou(r / "upper_bound_per_class_iou.csv")
    print("\n| | mIoU |\n|---|---|")
    print(f"| regularized loss (voc_miou) | {miou:.2f} |")
    print(f"| upper bound (true masks) | {upper:.2f} |")
    print(f"| lambda_reg = 0 | {miou0:.2f} |")
    print(f"| colour classifier on true masks | {colour:.2f} |")
    print("\n| class | IoU | upper bound | ratio |\n|---|---|---|---|")
    for c in pc:
        print(f"| {c} | {pc[c]:.2f} | {ub[c]:.2f} | {pc[c] / ub[c]:.3f} |")
    checks = {
        "upper_bound >= 70": upper >= 70,
        "voc_miou >= 0.8 * upper_bound": miou >= 0.8 * upper,
        "every class >= 0.5 x its upper bound": all(pc[c] >= 0.5 * ub[c] for c in pc),
        "colour classifier >= 15 points below": colour <= miou - 15,
        "lambda_reg = 0 >= 15 points below": miou0 <= miou - 15,
        f"voc_miou within 1 point of {REFERENCE_MIOU} (or above)": miou >= REFERENCE_MIOU - 1,
        "results/voc_miou.txt in <= 600 s": wall_miou <= 600,
    }
    print(f"\nwall time: results/voc_miou.txt {wall_miou:.0f} s, the rest of the default (upper bound, figures) "
          f"{wall - wall_miou:.0f} s, lambda_reg = 0 {wall0:.0f} s (0 when already up to date)")
    for k, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {k}")
    for figure, value in (("voc_miou", miou), ("upper_bound_miou", upper), ("lambda_reg_0_miou", miou0),
                          ("colour_classifier_miou", colour), ("wall_s_voc_miou_txt", wall_miou)):
        print(json.dumps({"figure": figure, "value": round(value, 2), "cores": args.cores}))


if __name__ == "__main__":
    main()
