"""Jobs side by side: the default run's multi-class job (config.yaml's settings, the synthetic world's 400 training
images and their true masks as labels), each job a fresh process set up as the workflow's jobs are
(``rlseg.pipeline.setup_job``), all in one run:

(a) one multi-class epoch alone;
(b) the same epoch while a single-threaded busy process (a Python loop) shares the machine;
(c) ``rule all``'s two multi-class jobs (pseudo labels and true masks) started together, without the CPU slots
    (``share_cpus: false``) and with them, against the sum of each alone (every job timed from its process's start
    to its exit).

One JSON line per figure, then the checks of the speed issue: (b) / (a) <= 2.5; (c) with the schema's default
``share_cpus`` <= 1.1 x the sum.

    python benchmarks/side_by_side.py [--epochs 1] [--threads 2] [--work results/benchmarks/side_by_side]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from rlseg.io import write_csv
from rlseg.settings import schema
from rlseg.synthetic import WorldSpec, write_world

REPO = Path(__file__).resolve().parents[1]

JOB = """
import json, sys, time
from rlseg.pipeline import run_multiclass, setup_job
args = json.loads(sys.argv[1])
t0 = time.time()
setup_job(args["threads"], "auto", args["share_cpus"])
waited = time.time() - t0
run_multiclass([args["pairs"]], args["ids"], args["settings"], args["out"] + "/model.pt", args["out"] + "/history.csv",
               args["out"] + "/checkpoint.pt", device="cpu")
print(json.dumps({"waited_s": waited, "wall_s": time.time() - t0}))
"""


def emit(figure: str, value: float, **extra) -> dict:
    row = {"figure": figure, "value": round(value, 2), **extra}
    print(json.dumps(row), flush=True)
    return row


def start_job(pairs: Path, ids: dict, settings: dict, out: Path, threads: int, share_cpus: bool) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    args = {"pairs": str(pairs), "ids": ids, "settings": settings, "out": str(out), "threads": threads,
            "share_cpus": share_cpus}
    job = subprocess.Popen([sys.executable, "-c", JOB, json.dumps(args)], stdout=subprocess.PIPE, text=True)
    job.started = time.time()  # type: ignore[attr-defined]
    return job


def finish(job: subprocess.Popen) -> dict:
    stdout, _ = job.communicate()
    if job.returncode:
        sys.exit(f"a multi-class job failed (exit {job.returncode})")
    # process_s: from the job's start to its exit, as Snakemake would time it (interpreter and imports included)
    return json.loads(stdout.strip().splitlines()[-1]) | {"process_s": time.time() - job.started}


def epoch_seconds(out: Path) -> float:
    lines = (out / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    return sum(float(line.split(",")[header.index("seconds")]) for line in lines[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="the multi-class job's threads (config.yaml's)")
    ap.add_argument("--work", type=Path, default=None, help="where the world and the jobs' outputs go (temporary)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="side_by_side_"))
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    classes = config["classes"]
    ids = {c: i + 1 for i, c in enumerate(classes)}
    world = work / "world"
    if not (world / "masks").is_dir():
        write_world(world, WorldSpec(classes=tuple(classes), **{k: v for k, v in config["synthetic"].items()}))
    pairs = work / "pairs.csv"
    write_csv(pairs, [{"image": str(p), "label": str(world / "masks" / c / f"{p.stem}.png")}
                      for c in classes for p in sorted((world / "images" / c).glob("*.jpg"))], ["image", "label"])
    settings = {k: v for k, v in config["multiclass"].items() if k != "threads"} | {"epochs": args.epochs}
    run = 0

    default_share = schema()["properties"]["share_cpus"]["default"]

    def job(share_cpus: bool = default_share) -> subprocess.Popen:
        nonlocal run
        run += 1
        return start_job(pairs, ids, settings, work / f"job{run}", args.threads, share_cpus)

    alone = finish(job())
    a = epoch_seconds(work / f"job{run}")
    emit("epoch_alone_s", a, wall_s=round(alone["wall_s"], 1))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        beside = finish(job())
    finally:
        busy.kill()
        busy.wait()
    b = epoch_seconds(work / f"job{run}")
    emit("epoch_beside_busy_process_s", b, slowdown=round(b / a, 2), wall_s=round(beside["wall_s"], 1))
    second_alone = finish(job())
    rows = {}
    for share in (True, False):
        t0 = time.time()
        both = [job(share), job(share)]
        waits = [finish(j)["waited_s"] for j in both]
        rows[share] = emit(f"two_jobs_together_{'with' if share else 'without'}_slots_s", time.time() - t0,
                           sum_alone_s=round(alone["process_s"] + second_alone["process_s"], 1),
                           waited_s=[round(w, 1) for w in waits])
    ratio = {share: r["value"] / r["sum_alone_s"] for share, r in rows.items()}
    print(f"\n{'PASS' if b / a <= 2.5 else 'FAIL'}  a busy process slows a multi-class epoch by <= 2.5x "
          f"({b / a:.2f}x)")
    print(f"{'PASS' if ratio[default_share] <= 1.1 else 'FAIL'}  rule all's two multi-class jobs together <= 1.1x "
          f"the sum of each alone (share_cpus: {str(default_share).lower()}, the default: "
          f"{ratio[default_share]:.2f}x; {str(not default_share).lower()}: {ratio[not default_share]:.2f}x)")


if __name__ == "__main__":
    main()
