"""benchmarks/gpu_check.sh runs on a machine without CUDA, says so in one line, and prints the CPU figures."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path):
    env = {**os.environ, "GPU_CHECK_QUICK": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert sum(line.startswith("no CUDA:") for line in lines) == 1 or torch.cuda.is_available()
    figures = [json.loads(line) for line in lines if line.startswith("{")]
    smoke = [f for f in figures if f["figure"] == "smoke_workflow_seconds"]
    assert [f["device"] for f in smoke] == ["cpu"] and smoke[0]["value"] > 0 and float(smoke[0]["miou"]) >= 0
    assert any(f["run"] == "throughput_cpu" and f["figure"].startswith("ours_images_per_s") for f in figures
               if "run" in f)
    assert {f["figure"] for f in figures if f.get("run") == "paper_cost_cpu"} >= {
        "multiclass_images_per_s", "predict_images_per_s"}
    assert (tmp_path / "out" / "smoke_cpu" / "voc_miou.txt").is_file()
