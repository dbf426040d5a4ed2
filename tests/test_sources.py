"""Image sources and evaluation sets end to end: voc_single + voc_dir on a tiny VOC fixture, folder images (bad
files among them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures import BAD, GOOD, make_voc, write_all
from PIL import Image
from snakemake_helpers import REPO, SCORES, SMOKE, recomputed_scores, rows, snakemake

from rlseg.checkpoint import load_weights
from rlseg.ingest import read_manifest
from rlseg.voc import pascal_single


def test_pascal_single_excludes_val_and_multi_class_images(tmp_path):
    voc = make_voc(tmp_path, {"cat": 8, "dog": 12}, per_class=3, val=2)
    single = pascal_single(voc)
    val = set((voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split())
    assert len(single) == 6 and not {r["id"] for r in single} & val
    assert {r["class"] for r in single} == {"cat", "dog"} and {r["labels_from"] for r in single} == {"xml"}


@pytest.mark.slow
def test_voc_single_with_voc_dir_evaluation_end_to_end(tmp_path):
    voc = make_voc(tmp_path / "data", {"cat": 8, "dog": 12}, per_class=8, val=4)
    cfg = tmp_path / "voc.yaml"
    cfg.write_text(yaml.safe_dump({
        "classes": ["cat", "dog"],
        "images": {"source": "voc_single", "root": str(tmp_path / "data"), "sbd": False},
        "eval": {"source": "voc_dir", "root": str(voc), "split": "val"},
    }))
    work = tmp_path / "work"
    snakemake(work, *SCORES, configs=(REPO / "config.yaml", SMOKE, cfg))
    r = work / "results"
    assert (r / "voc_miou.txt").read_text().strip() == f"{recomputed_scores(work)[0]:.2f}"
    assert (r / "upper_bound_miou.txt").is_file()  # VOC's class masks give the upper bound
    per_class = rows(r / "voc_per_class_iou.csv")
    assert [(x["class"], x["id"]) for x in per_class] == [("background", "0"), ("cat", "8"), ("dog", "12")]
    used = [m["path"] for m in rows(r / "images" / "cat" / "manifest.csv") if m["status"] == "used"]
    val = set((voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split())
    assert len(used) == 8 and not any(p.split("/")[-1][:-4] in val for p in used)
    label = np.asarray(Image.open(work / rows(r / "pseudo_gt" / "dog" / "pairs.csv")[0]["label"]))
    assert set(np.unique(label)) <= {0, 12}


@pytest.mark.slow
def test_folder_images_with_bad_files_and_voc_dir_evaluation(tmp_path):
    """A user's folder, with the files a web search leaves in it, through the whole workflow: each bad file is
    skipped with its reason, the odd but valid ones are used."""
    from rlseg.synthetic import WorldSpec, write_world

    world = tmp_path / "world"
    write_world(world, WorldSpec(classes=("disc", "box"), images_per_class=10, negatives=0, eval_images=5, size=64))
    folder = tmp_path / "my images"  # a space in the path
    for cls in ("disc", "box"):
        shutil.copytree(world / "images" / cls, folder / cls)
    write_all(folder / "disc", {name: data for name, (data, _) in BAD.items()})
    write_all(folder / "disc", GOOD)
    (folder / "disc" / "escape.jpg").symlink_to(world / "eval" / "JPEGImages" / "eval_0001.jpg")
    cfg = tmp_path / "folder.yaml"
    cfg.write_text(yaml.safe_dump({
        "images": {"source": "folder", "root": str(folder), "min_side": 32},
        "eval": {"source": "voc_dir", "root": str(world / "eval")},
        # every class starts from a base model, as the paper's VOC runs start from Oxford-IIIT Pet, and asks the
        # volumetric term for the object size it sees (the photo preset's), which the base model cannot
        "single_class": {"init": "base", "vol_target": "auto"},
        "base_model": {"source": "folder", "root": str(world / "negatives")},
    }))
    (world / "negatives").mkdir(exist_ok=True)
    for p in sorted((world / "eval" / "JPEGImages").iterdir()):
        shutil.copy(p, world / "negatives" / p.name)
    work = tmp_path / "work"
    proc = snakemake(work, "results/voc_miou.txt", configs=(REPO / "config.yaml", SMOKE, cfg))
    r = work / "results"
    manifest = {m["path"].rsplit("/", 1)[-1]: m for m in read_manifest(r / "images" / "disc" / "manifest.csv")}
    for name, (_, reason) in BAD.items():
        assert manifest[name]["status"] == "skipped" and reason in manifest[name]["reason"], manifest[name]
    assert "outside the data folder" in manifest["escape.jpg"]["reason"]
    assert all(manifest[name]["status"] == "used" for name in GOOD)
    assert "class disc: skipped 7 of" in (r / "logs" / "manifests.log").read_text(), proc.stdout[-2000:]
    assert (r / "voc_miou.txt").read_text().strip() == f"{recomputed_scores(work)[0]:.2f}"
    assert not (r / "upper_bound_miou.txt").exists()  # a user's folder has no true masks
    assert len(rows(r / "predictions" / "pseudo_gt" / "pairs.csv")) == 5
    assert [h["stage"] for h in rows(r / "base_model" / "history.csv")] == ["anneal", "normal"]
    assert [h["stage"] for h in rows(r / "single_class" / "disc" / "history.csv")] == ["normal", "negative"]
    assert load_weights(r / "base_model" / "model_final.pt")["meta"]["vol_target"] == 0.5  # the paper's
    assert load_weights(r / "single_class" / "disc" / "model_final.pt")["meta"]["vol_target"] != "auto"


def test_voc2012_uses_an_existing_devkit(tmp_path):
    from rlseg.eval_steps import resolve_eval_set

    make_voc(tmp_path / "voc", {"cat": 8, "dog": 12}, per_class=1, val=3)
    resolve_eval_set({"source": "voc2012", "root": str(tmp_path / "voc"), "split": "val"}, str(tmp_path),
                     str(tmp_path / "index.csv"), ["cat", "dog"])
    index = rows(tmp_path / "index.csv")
    assert len(index) == 3 and all("VOCdevkit/VOC2012/SegmentationClass" in x["mask"] for x in index)


def test_a_new_image_source_is_one_registration(tmp_path):
    """A source that reads each class's file list from <lists>/<class>.txt, masks beside the images: one
    ImageSource registered (its name would join the schema's images.source enum for the workflow)."""
    from fixtures import photo

    from rlseg.eval_steps import true_mask_pairs
    from rlseg.ingest import check_files
    from rlseg.pipeline import finalize, ingest_class
    from rlseg.sources import ImageSource, get_source, register

    lists = tmp_path / "lists"
    lists.mkdir()
    for cls in ("cat", "dog"):
        paths = []
        for i in range(3):
            img = tmp_path / "pool" / f"{cls}{i}.jpg"
            img.parent.mkdir(exist_ok=True)
            photo(seed=len(cls) * 10 + i).save(img)
            Image.fromarray(np.full((80, 96), 8 if cls == "cat" else 12, np.uint8)).save(img.with_suffix(".png"))
            paths.append(str(img))
        (lists / f"{cls}.txt").write_text("\n".join(paths + [str(tmp_path / "pool" / "missing.jpg")]))

    def candidates(cls, images, web, results):
        files = (lists / f"{cls}.txt").read_text().split()
        return check_files(files, max_pixels=images["max_pixels"], min_side=images["min_side"])

    register(ImageSource(name="listed", candidates=candidates,
                         true_mask=lambda path, cls, results: tmp_path / "pool" / f"{Path(path).stem}.png"))
    assert get_source("listed").prepared_by is None
    images = {"source": "listed", "max_pixels": 10**7, "min_side": 32, "on_bad_image": "skip"}
    results = tmp_path / "results"
    for cls in ("cat", "dog"):
        ingest_class(cls, images, {}, str(results), str(results / "images" / cls / "candidates.csv"))
    cands = [str(results / "images" / c / "candidates.csv") for c in ("cat", "dog")]
    mans = [str(results / "images" / c / "manifest.csv") for c in ("cat", "dog")]
    finalize(cands, mans, ["cat", "dog"], near_duplicate_bits=-1, min_images=2)
    cat = rows(results / "images" / "cat" / "manifest.csv")
    assert [r["status"] for r in cat] == ["used"] * 3 + ["skipped"] and "No such file" in cat[-1]["reason"]
    true_mask_pairs("listed", mans, str(results), str(results / "ground_truth" / "pairs.csv"))
    pairs = rows(results / "ground_truth" / "pairs.csv")
    assert len(pairs) == 6 and all(Path(p["label"]).is_file() for p in pairs)


def test_the_schema_names_exactly_the_built_in_sources():
    import subprocess
    import sys

    from rlseg.config import allowed

    # a fresh process: other tests register sources of their own in this one
    code = "import rlseg.sources as s; print(' '.join(sorted(s._SOURCES)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == sorted(allowed("images.source"))
