"""The ``rlseg`` command through its installed entry point: help, train on a folder, predict new images."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess

import pytest
import torch
from PIL import Image
from snakemake_helpers import REPO

from rlseg.schedule import single_class_settings

# a short schedule (2 annealing + 4 normal epochs at 128 px, the pipeline's default network) keeps CI quick
SHORT = ["--anneal-epochs", "2", "--normal-epochs", "4", "--resolutions", "[128]", "--threads", "2"]


def rlseg(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("rlseg")
    assert exe, "the rlseg entry point is not installed (pip install -e .)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=1200)


@pytest.mark.parametrize("command", [[], ["train"], ["predict"]])
def test_help_of_every_command(command):
    proc = rlseg(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: rlseg" in proc.stdout
    if command == ["train"]:
        assert "--normal-epochs" in proc.stdout and "--negative-ratio" in proc.stdout  # every single_class key


def test_bad_setting_is_refused_naming_the_key(tmp_path):
    (tmp_path / "imgs").mkdir()
    proc = rlseg("train", str(tmp_path / "imgs"), "--out", str(tmp_path / "m.pt"), "--decoder-channels", "[1, 2]")
    assert proc.returncode == 2 and "decoder_channels" in proc.stderr


def _benchmark():
    spec = importlib.util.spec_from_file_location("single_class_benchmark", REPO / "benchmarks" / "single_class.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_train_then_predict_on_weizmann_horses(horse_dir, tmp_path):
    train, test = tmp_path / "train", tmp_path / "test"
    for d in (train, test):
        d.mkdir()
    for p in sorted((horse_dir / "images").glob("*.jpg")):
        shutil.copyfile(p, (train if p.stem <= "horse228" else test) / p.name)
    (test / "horse999.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    # every train-fold image, as the benchmark takes them (6 are near-duplicates the default would drop)
    proc = rlseg("train", str(train), "--out", str(tmp_path / "horse.pt"), "--near-duplicate-bits", "-1", *SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = rlseg("predict", str(tmp_path / "horse.pt"), str(test), "--out", str(tmp_path / "pred"),
                 "--truth", str(horse_dir / "masks"))
    assert proc.returncode == 1, proc.stderr[-3000:]  # one bad file: named, skipped, the rest done
    assert "skipped " + str(test / "horse999.jpg") + ": corrupt or truncated image" in proc.stderr
    names = sorted(p.stem for p in test.glob("horse*.jpg") if p.stem != "horse999")
    assert sorted(p.stem for p in (tmp_path / "pred").glob("*.png")) == names
    assert sorted(p.stem for p in (tmp_path / "pred").glob("*_overlay.jpg")) == [f"{n}_overlay" for n in names]
    with Image.open(tmp_path / "pred" / f"{names[0]}.png") as mask, Image.open(test / f"{names[0]}.jpg") as img:
        assert mask.size == img.size and mask.mode == "P"
    f_cli = float(re.search(r"F-measure (\d\.\d+)", proc.stdout).group(1))
    # the benchmark's code path with the same settings, scored at 128 px as the benchmark scores
    settings = {"anneal_epochs": 2, "normal_epochs": 4, "resolutions": [128]}
    cfg, _ = single_class_settings(_schema_defaults(settings))  # the CLI's defaults: the schema's
    torch.set_num_threads(2)
    row = _benchmark().run("weizmann_horse", "reg_anneal", horse_dir.parent, tmp_path / "bench", cfg, None, "cpu")
    print(f"rlseg predict F {f_cli:.4f} (at image size), benchmark F {row['f_measure']:.4f} (at 128 px)")
    a = torch.load(tmp_path / "horse.pt", weights_only=True)["state_dict"]
    b = torch.load(row["model"], weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # one code path: the same weights
    assert f_cli > 0.5 and abs(f_cli - row["f_measure"]) <= 0.03


def _schema_defaults(settings: dict) -> dict:
    import argparse

    from rlseg.cli_train import train_settings

    ns = argparse.Namespace(config=None, negatives=None, **settings)
    return train_settings(ns)


@pytest.mark.slow
def test_train_places_the_centre_box_by_imagenet_only_with_negatives(horse_dir, tmp_path):
    """single_class.center imagenet: the folder's ImageNet classes are those it scores above --negatives; one folder
    alone has nothing to contrast with and keeps the middle."""
    from conftest import SHARED

    ecssd = SHARED / "ecssd" / "images"
    if not ecssd.is_dir():
        pytest.skip(f"shared ECSSD not found at {ecssd}")
    horses, others = tmp_path / "horses", tmp_path / "others"
    for d, src in ((horses, horse_dir / "images"), (others, ecssd)):
        d.mkdir()
        files = sorted(src.glob("*.jpg"))[:8]
        for p in files:
            shutil.copyfile(p, d / p.name)
    cfg = tmp_path / "centre.yaml"
    cfg.write_text("single_class:\n  center: imagenet\n")
    tiny = ["--config", str(cfg), "--anneal-epochs", "1", "--normal-epochs", "1", "--negative-epochs", "1",
            "--resolutions", "[64]", "--threads", "2"]
    proc = rlseg("train", str(horses), "--out", str(tmp_path / "a.pt"), "--negatives", str(others), *tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"centre box on the map of .*sorrel.*; moved off the middle in \d+ of 8 photos", proc.stderr)
    assert (tmp_path / "a.work" / "imagenet_scores_negatives.npy").is_file()
    proc = rlseg("train", str(horses), "--out", str(tmp_path / "b.pt"), *tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the centre box stays in the middle" in proc.stderr and "centre box on the map" not in proc.stderr
