"""Scale-out: the smoke pipeline through a real one-node SLURM cluster on localhost, and a SIGKILLed job that
resumes."""

from __future__ import annotations

import filecmp
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import SMOKE_GROUP
from snakemake_helpers import REPO, SCORES, snakemake

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"

pytestmark = pytest.mark.slow  # end-to-end runs through Snakemake


def _ensure_slurm() -> None:
    if os.geteuid() != 0:
        pytest.skip("the SLURM test needs root to start munged, slurmctld and slurmd")
    if shutil.which("sbatch") and shutil.which("munged") and shutil.which("slurmd"):
        return
    if not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and apt-get is missing")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], check=True, env=env,
                   capture_output=True, timeout=900)


@pytest.fixture()
def cluster(tmp_path):
    _ensure_slurm()
    state = tmp_path / "slurm"
    proc = subprocess.run(["bash", str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=180)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip())
    try:
        assert proc.returncode == 0, proc.stderr + "".join(p.read_text() for p in state.glob("*.log"))
        yield state
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(state)], capture_output=True, timeout=60)


TRAINERS = ("train_single_class", "train_multiclass", "train_base_model")


@SMOKE_GROUP
def test_smoke_pipeline_through_slurm_equals_local(cluster, tmp_path, smoke_run):
    slurm_dir = tmp_path / "on_slurm"
    snakemake(
        slurm_dir, *SCORES, "--profile", str(REPO / "profiles" / "slurm"), "--jobs", "2",
        "--slurm-no-account", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
        "--default-resources", "slurm_partition=debug", "mem_mb=500", "runtime=30",
        # the test cluster has no GPU and few CPUs: the profile's GPU requests and threads are overridden
        "--set-resources", *[f"{r}:{k}={v}" for r in TRAINERS for k, v in (("gpu", 0), ("mem_mb", 1000))],
        *[f"{r}:gpu=0" for r in ("pseudo_gt", "predict")],
        "--set-threads", *[f"{r}=1" for r in TRAINERS],
    )
    logs = {str(p.relative_to(slurm_dir / "results" / "logs")): p.read_text()
            for p in (slurm_dir / "results" / "logs").rglob("*.log")}
    assert len(logs) >= 15
    on_slurm = [k for k in logs if k.startswith(("train_single_class/", "pseudo_gt/", "train_multiclass/", "predict/"))]
    local = [k for k in logs if k.startswith(("manifests", "evaluate", "true_masks"))]
    assert len(on_slurm) >= 8 and len(local) >= 4
    for name in on_slurm:  # the training and inference jobs ran through sbatch
        assert "(SLURM job " in logs[name], name
    for name in local:  # the seconds-long ones (localrules) on the submitting machine
        assert "(SLURM job " not in logs[name], name
    outputs = [p.relative_to(slurm_dir) for p in (slurm_dir / "results").rglob("*")
               if p.suffix in (".png", ".txt") or p.name in ("manifest.csv", "pairs.csv")]
    assert len(outputs) > 50
    # against the session's smoke run: the same config run locally (rule all, a superset of the scores' outputs)
    different = [str(p) for p in outputs if not filecmp.cmp(smoke_run / p, slurm_dir / p, shallow=False)]
    assert not different


KILLED_TRAINING = textwrap.dedent("""
    import logging, sys, torch
    from rlseg.train import SingleClassConfig, train_single_class
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(96, 3, 64, 64, generator=g) * 255).to(torch.uint8)
    images[:, :, 16:48, 16:48] = 220
    negatives = (torch.rand(64, 3, 64, 64, generator=g) * 255).to(torch.uint8)
    # the negative stage draws a fresh sample of negatives each epoch: the rerun must draw the same ones
    cfg = SingleClassConfig(resolutions=[64], anneal_epochs=2, normal_epochs=3, negative_epochs=2, batch_size=8,
                            negative_ratio=0.25, decoder_channels=[32, 16, 16, 8, 8])
    out = train_single_class(cfg, lambda r: (images, negatives, None), sys.argv[1], device="cpu",
                             with_negatives=True)
""")


def _train(outdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", KILLED_TRAINING, str(outdir)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_epoch_then_rerun_resumes_to_identical_weights(tmp_path):
    ref = _train(tmp_path / "uninterrupted")
    assert ref.wait(timeout=600) == 0, ref.stdout.read()
    victim = _train(tmp_path / "killed")
    ckpt = tmp_path / "killed" / "checkpoint_64.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline:  # the first epoch's checkpoint is written...
        time.sleep(0.05)
    time.sleep(0.2)  # ...and the second epoch is under way
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    epoch_at_kill = torch.load(ckpt, weights_only=True)["epoch"]
    assert epoch_at_kill < 4 and not (tmp_path / "killed" / "model_64.pt").exists()
    rerun = _train(tmp_path / "killed")
    out = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, out
    assert f"resumed {ckpt} at epoch {epoch_at_kill + 1}" in out
    a = torch.load(tmp_path / "uninterrupted" / "model_64.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / "model_64.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
