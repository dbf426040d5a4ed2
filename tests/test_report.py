"""The run's figures and Snakemake's report: every figure drawn, the numbers drawn equal to the CSVs, the report
viewed in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMOKE_GROUP
from PIL import Image
from snakemake_helpers import install_only_env, rows, snakemake

from rlseg.evaluate import read_per_class_iou, write_confusion
from rlseg.io import write_csv
from rlseg.report import (
    confusion_heatmap,
    iou_bars,
    loss_accuracy_scatter,
    pearson_r,
    skip_kind,
    training_curves,
)
from rlseg.study import loss_accuracy_study
from rlseg.train import SingleClassConfig

SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(path: Path) -> list[str]:
    """The text a figure draws (SVG with text kept as text); fails unless the file is an SVG document."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg", f"{path} is not an SVG image"
    return ["".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")]


def check_image(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, f"{path} missing or empty"
    if path.suffix == ".svg":
        assert len(svg_texts(path)) > 3
        return
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] > 50 and arr.shape[1] > 50 and arr.std() > 10, f"{path} is blank"


def test_iou_bars_draw_the_csv_values(tmp_path: Path):
    per_class = tmp_path / "pc.csv"
    upper = tmp_path / "ub.csv"
    write_csv(per_class, [{"class": "background", "id": 0, "iou": 80.04}, {"class": "cat", "id": 8, "iou": 41.25}])
    write_csv(upper, [{"class": "background", "id": 0, "iou": 90.5}, {"class": "cat", "id": 8, "iou": 70.0}])
    iou_bars(per_class, 60.65, tmp_path / "bars.svg", upper, 80.25)
    texts = svg_texts(tmp_path / "bars.svg")
    assert "pipeline mIoU 60.65 · upper bound mIoU 80.25" in texts
    assert [t for t in texts if re.fullmatch(r"\d+\.\d", t)] == ["80.0", "41.2", "90.5", "70.0"]


def test_confusion_rows_are_normalised(tmp_path: Path):
    write_confusion(tmp_path / "c.csv", np.array([[90, 10], [25, 75]]), ["cat"])
    norm = confusion_heatmap(tmp_path / "c.csv", tmp_path / "c.svg", "t")
    assert np.allclose(norm, [[0.9, 0.1], [0.25, 0.75]])
    assert {"90", "10", "25", "75"} <= set(svg_texts(tmp_path / "c.svg"))


def test_training_curves_mark_each_stage(tmp_path: Path):
    hist = [{"stage": s, "epoch": e, "sigma": 0.15, "loss": 0.5 / (i + 1), "sparse_crf": 0.01, "volumetric": 0.1,
             "positional": 0.01, "negative": "" if s != "negative" else 0.02, "resolution": r, "seconds": 1}
            for i, (s, e, r) in enumerate([("normal", 1, 128), ("normal", 2, 128), ("transfer", 1, 256),
                                           ("negative", 2, 256)])]
    write_csv(tmp_path / "h.csv", hist)
    stages = training_curves(tmp_path / "h.csv", tmp_path / "h.svg", "training: cat")
    assert stages == ["normal@128", "transfer@256", "negative@256"]
    assert set(stages) <= set(svg_texts(tmp_path / "h.svg"))


def test_skip_reasons_are_counted_by_kind():
    assert skip_kind("duplicate of /data/a.jpg") == "duplicate"
    assert skip_kind("near-duplicate of /data/a.jpg") == "near-duplicate"
    assert skip_kind("near-duplicate under class dog: /b.jpg") == "near-duplicate under another class"
    assert skip_kind("too small (20x10, shorter side < 32)") == "too small"
    assert skip_kind("corrupt or truncated image (OSError: x)") == "corrupt or truncated image"


def test_pearson_r():
    assert pearson_r([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson_r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(pearson_r([1, 1, 1], [1, 2, 3]))


def _discs(n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, masks = [], []
    for _ in range(n):
        cy, cx = torch.randint(10, size - 10, (2,), generator=g)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 < 49).to(torch.uint8)
        bg, fg = torch.randint(0, 255, (3,), generator=g), torch.randint(0, 255, (3,), generator=g)
        images.append(torch.where(m.bool(), fg.view(3, 1, 1), bg.view(3, 1, 1)).to(torch.uint8))
        masks.append(m)
    return torch.stack(images), torch.stack(masks)


def test_loss_study_scores_each_step_and_the_truth(tmp_path: Path):
    images, masks = _discs(6)
    cfg = SingleClassConfig(decoder_channels=[16, 8, 8, 8, 8], batch_size=3)
    out = loss_accuracy_study("discs", images, masks, cfg, steps=3, workdir=tmp_path)
    assert [r["step"] for r in out] == [0, 1, 2, 3, "truth"]
    truth = out[-1]
    assert truth["f_measure"] == pytest.approx(1.0)
    # the true masks cut only along the discs' edges: the lowest sparse-CRF loss of all
    assert truth["sparse_crf"] < min(r["sparse_crf"] for r in out[:-1])
    assert not list(tmp_path.glob("checkpoint_*"))
    write_csv(tmp_path / "study.csv", out)
    table = loss_accuracy_scatter(tmp_path / "study.csv", tmp_path / "study.svg")
    steps = out[:-1]
    assert table["sparse_crf"]["discs"] == pytest.approx(pearson_r([r["sparse_crf"] for r in steps],
                                                                   [r["f_measure"] for r in steps]))
    assert f"discs (r = {table['dense_crf']['discs']:.2f})" in svg_texts(tmp_path / "study.svg")


# --- the smoke run's report --------------------------------------------------------------------------------------

FIGURES = ["iou_per_class.svg", "images_per_class.svg", "confusion_voc.svg", "confusion_upper_bound.svg",
           "training/disc.svg", "training/box.svg", "gallery/disc.png", "gallery/box.png", "loss_accuracy.svg"]


@pytest.fixture(scope="module")
def report(smoke_run: Path, tmp_path_factory) -> Path:
    # the README's commands, with only what the README's install brings importable
    env = install_only_env(tmp_path_factory.mktemp("install_only"))
    snakemake(smoke_run, "results/figures/loss_accuracy.svg", env=env)  # the optional target joins the report
    snakemake(smoke_run, "--report", "results/report.html", "all", "results/figures/loss_accuracy.svg", env=env)
    return smoke_run / "results" / "report.html"


def test_install_only_env_hides_the_test_extras(tmp_path):
    env = install_only_env(tmp_path)
    hidden = subprocess.run([sys.executable, "-c", "import pytest"], env=env, capture_output=True, text=True)
    assert hidden.returncode == 1 and "No module named 'pytest'" in hidden.stderr
    for command in (["-m", "rlseg.cli", "--help"], ["-m", "snakemake", "--version"]):
        subprocess.run([sys.executable, *command], env=env, check=True, capture_output=True, timeout=120)


@SMOKE_GROUP
def test_every_figure_is_drawn_and_in_the_report(smoke_run: Path, report: Path):
    figures = smoke_run / "results" / "figures"
    for name in FIGURES:
        check_image(figures / name)
    assert sorted(str(p.relative_to(figures)) for p in figures.rglob("*.*")) == sorted(FIGURES)
    html = report.read_text()
    assert report.stat().st_size > 100_000
    for name in FIGURES:
        assert Path(name).name in html, f"{name} is not in the report"


@SMOKE_GROUP
def test_the_drawn_numbers_are_the_csv_numbers(smoke_run: Path):
    r = smoke_run / "results"
    texts = svg_texts(r / "figures" / "iou_per_class.svg")
    miou, upper = (r / "voc_miou.txt").read_text().strip(), (r / "upper_bound_miou.txt").read_text().strip()
    assert f"pipeline mIoU {miou} · upper bound mIoU {upper}" in texts
    bars = [t for t in texts if re.fullmatch(r"\d+\.\d|nan", t)]
    expected = [f"{v:.1f}" for f in ("voc_per_class_iou.csv", "upper_bound_per_class_iou.csv")
                for v in read_per_class_iou(r / f).values()]
    assert bars == expected
    used = {c: sum(m["status"] == "used" for m in rows(r / "images" / c / "manifest.csv")) for c in ("disc", "box")}
    summary = svg_texts(r / "figures" / "images_per_class.svg")
    assert f"images per class: {sum(used.values())} used, 0 skipped" in summary
    study = rows(r / "study" / "loss_accuracy.csv")
    assert [x["step"] for x in study] == ["0", "1", "2", "truth"] * 2


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be installed here (needs apt-get as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], check=True, env=env,
                   capture_output=True, timeout=900)
    return shutil.which("chromium")


@SMOKE_GROUP
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path):
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,900", "--virtual-time-budget=15000", f"--screenshot={shot}",
                    report.as_uri()], check=True, capture_output=True, timeout=300)
    with Image.open(shot) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[:2] == (900, 1280)
    # a blank page is one colour; the report's menu, text and tables give many
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 50 and arr.std() > 20
