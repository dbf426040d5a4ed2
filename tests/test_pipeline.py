"""The workflow through Snakemake itself, on the smoke config in a temporary directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import SMOKE_GROUP
from PIL import Image
from snakemake_helpers import REPO, SMOKE, recomputed_scores, rows, snakemake

from rlseg.checkpoint import load_weights
from rlseg.config import load_config
from rlseg.models import build_unet
from rlseg.schedule import single_class_settings
from rlseg.settings import labelling_of


@SMOKE_GROUP
def test_every_stage_writes_its_outputs(smoke_run: Path):
    r = smoke_run / "results"
    per_class = rows(r / "voc_per_class_iou.csv")
    assert [x["class"] for x in per_class] == ["background", "disc", "box"]
    for variant, scores in (("pseudo_gt", "voc"), ("ground_truth", "upper_bound")):
        miou, ious = recomputed_scores(smoke_run, variant)
        assert (r / f"{scores}_miou.txt").read_text().strip() == f"{miou:.2f}"
        written = {x["class"]: float(x["iou"]) for x in rows(r / f"{scores}_per_class_iou.csv")}
        assert written == pytest.approx(ious, abs=1e-3)
    for cls, cid in (("disc", 1), ("box", 2)):
        manifest = rows(r / "images" / cls / "manifest.csv")
        assert len(manifest) == 10 and all(m["status"] == "used" and len(m["sha1"]) == 40 for m in manifest)
        history = rows(r / "single_class" / cls / "history.csv")
        assert [h["stage"] for h in history] == ["anneal", "normal", "negative"]
        assert {"sparse_crf", "volumetric", "positional", "f_measure", "jaccard", "sigma"} <= set(history[0])
        assert "negative" in history[-1] and history[-1]["negative"] != ""
        pairs = rows(r / "pseudo_gt" / cls / "pairs.csv")
        assert len(pairs) == 10
        label = Image.open(smoke_run / pairs[0]["label"])  # paths are relative to the workflow's directory
        assert label.mode == "P" and label.size == Image.open(smoke_run / pairs[0]["image"]).size
        assert set(np.unique(np.asarray(label))) <= {0, cid}
        assert (r / "single_class" / cls / "model_64.pt").is_file()
        # the model rlseg predict is given: the class's, with the run's labelling recorded
        exported = load_weights(r / "models" / f"{cls}.pt")
        trained = load_weights(r / "single_class" / cls / "model_final.pt")
        # with the ImageNet classes that its pseudo_gt.cam_filter kept the labels' parts by
        recorded = exported["meta"]["labelling"]
        cam_classes = recorded.pop("cam_classes")
        assert recorded.pop("cam_min_ratio") == 0.3 and len(cam_classes) == 3
        assert recorded == labelling_of(load_config(REPO / "config.yaml", SMOKE)["pseudo_gt"])
        assert np.load(r / "imagenet_scores" / f"{cls}.npy").shape == (1000,)
        assert "ImageNet's" in (r / "logs" / "pseudo_gt" / f"{cls}.log").read_text()
        assert all(torch.equal(v, trained["state_dict"][k]) for k, v in exported["state_dict"].items())
    preds = rows(r / "predictions" / "pseudo_gt" / "pairs.csv")
    assert len(preds) == 6
    for name in ("synthetic_world", "train_multiclass/pseudo_gt", "train_single_class/disc", "evaluate"):
        assert (r / "benchmarks" / f"{name}.tsv").is_file()
        assert "done in" in (r / "logs" / f"{name}.log").read_text()


@SMOKE_GROUP
def test_predict_with_an_exported_model_labels_as_the_run_did(smoke_run: Path, tmp_path):
    """rlseg predict reads the run's labelling from results/models/CLS.pt, the ImageNet check included."""
    from rlseg.cli import main as cli

    pairs = rows(smoke_run / "results" / "pseudo_gt" / "box" / "pairs.csv")
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in pairs:
        (photos / Path(p["image"]).name).write_bytes((smoke_run / p["image"]).read_bytes())
    model = smoke_run / "results" / "models" / "box.pt"
    assert cli(["predict", str(model), str(photos), "--out", str(tmp_path / "out"), "--class-id", "2"]) == 0
    for p in pairs:
        run = np.asarray(Image.open(smoke_run / p["label"]))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{Path(p['image']).stem}.png")), run)


@SMOKE_GROUP
def test_world_is_deterministic_and_eval_differs(smoke_run: Path, tmp_path):
    from rlseg.synthetic import WorldSpec, write_world

    spec = WorldSpec(classes=("disc", "box"), images_per_class=10, negatives=4, eval_images=6, size=64)
    write_world(tmp_path, spec)
    a = (tmp_path / "images" / "disc" / "disc_0003.jpg").read_bytes()
    assert a == (smoke_run / "results" / "world" / "images" / "disc" / "disc_0003.jpg").read_bytes()
    assert a != (tmp_path / "eval" / "JPEGImages" / "eval_0003.jpg").read_bytes()
    mask = np.asarray(Image.open(tmp_path / "eval" / "SegmentationClass" / "eval_0001.png"))
    assert 255 in mask and set(np.unique(mask)) <= {0, 1, 2, 255}


@SMOKE_GROUP
def test_forcerun_reruns_one_stage_and_what_follows(smoke_run: Path):
    proc = snakemake(smoke_run, "-n", "--forcerun", "train_multiclass")
    out = proc.stdout
    assert "train_multiclass" in out and "train_single_class" not in out.split("Job stats")[-1]


@SMOKE_GROUP
def test_changing_a_value_reruns_exactly_the_stages_that_use_it(smoke_run: Path, tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"multiclass": {"epochs": 2}}))
    proc = snakemake(smoke_run, "-n", configs=(REPO / "config.yaml", SMOKE, override))
    stats = proc.stdout.split("Job stats")[-1]
    assert "train_multiclass" in stats and "train_single_class" not in stats and "ingest" not in stats


def test_paper_config_plans_the_full_dag_offline(tmp_path):
    proc = snakemake(tmp_path, "-n", "results/voc_miou.txt", configs=(REPO / "configs" / "paper.yaml",))
    stats = proc.stdout.split("Job stats")[-1]
    assert "train_single_class       20" in stats and "train_base_model          1" in stats
    assert "download_voc2012          1" in stats


def test_imagenet_centres_wait_for_every_classs_imagenet_scores(tmp_path):
    """single_class.center imagenet: each class CNN reads every class's mean ImageNet scores, computed on all the
    run's cores."""
    override = tmp_path / "centre.yaml"
    override.write_text(yaml.safe_dump({"single_class": {"center": "imagenet"}}))
    proc = snakemake(tmp_path, "-n", "--cores", "4", "results/voc_miou.txt", "results/upper_bound_miou.txt",
                     configs=(REPO / "config.yaml", override))
    stats = proc.stdout.split("Job stats")[-1]
    n = len(yaml.safe_load((REPO / "config.yaml").read_text())["classes"])
    assert re.search(rf"imagenet_scores\s+{n}\n", stats), stats
    inputs = proc.stdout.split("rule train_single_class:")[1].split("input: ")[1].splitlines()[0]
    assert inputs.count("imagenet_scores/") == n, inputs
    # each scoring job takes the run's cores, so that the upper bound's network cannot take one while they run
    scoring = proc.stdout.split("rule imagenet_scores:")[1].split("\n\n")[0]
    assert "threads: 4" in scoring, scoring


def _multiclass_jobs(stdout: str) -> dict[str, dict[str, str]]:
    """variant -> the dry run's fields (threads, priority) of each train_multiclass job."""
    jobs = {}
    for block in stdout.split("rule train_multiclass:")[1:]:
        fields = dict(line.strip().split(": ", 1) for line in block.split("\n[")[0].splitlines()[1:] if ": " in line)
        jobs[fields["wildcards"].split("=")[1]] = fields
    return jobs


@pytest.mark.parametrize(("targets", "threads"), [
    (("results/voc_miou.txt",), {"pseudo_gt": "4"}),
    (("results/voc_miou.txt", "results/upper_bound_miou.txt"), {"pseudo_gt": "2", "ground_truth": "2"}),
    ((), {"pseudo_gt": "2", "ground_truth": "2"}),
])
def test_multiclass_networks_share_the_cores_and_the_pipeline_goes_first(tmp_path, targets, threads):
    """The run's cores are shared by the multi-class networks it trains, so that the upper bound's trains beside
    the pipeline's instead of before it; the pipeline's jobs have the scheduler's priority."""
    proc = snakemake(tmp_path, "-n", "--cores", "4", *targets, configs=(REPO / "config.yaml",))
    jobs = _multiclass_jobs(proc.stdout)
    assert {v: f.get("threads", "1") for v, f in jobs.items()} == threads, proc.stdout
    assert jobs["pseudo_gt"].get("priority") == "1" and jobs.get("ground_truth", {}).get("priority", "0") == "0"


@pytest.mark.parametrize(("eval_root", "downloads"), [("data/voc", 1), ("data/voc_eval", 2)])
def test_one_voc_folder_is_downloaded_once(tmp_path, eval_root, downloads):
    """PascalSingle and the evaluation set read VOC 2012 from one folder: one download job, both wait for it."""
    override = tmp_path / "voc.yaml"
    override.write_text(yaml.safe_dump({"images": {"source": "voc_single", "root": "data/voc"},
                                        "eval": {"source": "voc2012", "root": eval_root}}))
    proc = snakemake(tmp_path, "-n", "results/voc_miou.txt",
                     configs=(REPO / "configs" / "paper.yaml", override))
    stats = proc.stdout.split("Job stats")[-1]
    assert f"download_voc2012          {downloads}" in stats, stats


@pytest.mark.parametrize(
    "override, message",
    [
        ({"bogus_key": 1}, "bogus_key"),
        ({"single_class": {"lr": "fast"}}, "fast"),
        ({"classes": ["disc", "disc"]}, "duplicate class names"),
        ({"single_class": {"resolutions": [100]}}, "not a multiple of 32"),
        ({"multiclass": {"crop": 100}}, "multiclass.crop"),
        ({"single_class": {"encoder": "mobilenet_v2", "encoder_head": True}}, "encoder_head applies"),
        ({"single_class": {"decoder": "smp", "decoder_convs": 1}}, "decoder_convs applies"),
        ({"single_class": {"decoder_convs": [1, 1]}}, "decoder_convs"),
        ({"single_class": {"encoder": "se_resnext50_32x4d", "encoder_features": "all_blocks"}}, "all_blocks applies"),
        ({"single_class": {"normal_epochs": -1}}, "-1"),
        ({"images": {"source": "folder", "root": "/nonexistent"}}, "/nonexistent/disc"),
        ({"classes": ["aeroplane", "cat"], "images": {"source": "web"}}, "eval.source = synthetic draws"),
        ({"pseudo_gt": {"resolution": 100}}, "pseudo_gt.resolution: 100"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, override, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(override))
    proc = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml", SMOKE, cfg), check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("decoder, convs", [("light", [0, 0, 1, 1]), ("smp", 0)])
def test_default_decoder_convs_follow_the_decoder(tmp_path, decoder, convs):
    cfg = tmp_path / "decoder.yaml"
    cfg.write_text(yaml.safe_dump({"single_class": {"decoder": decoder}}))
    settings, _ = single_class_settings(load_config(REPO / "config.yaml", cfg)["single_class"])
    assert build_unet(settings.arch, pretrained=False).arch["decoder_convs"] == convs


def test_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--lint",
                           "--configfile", str(REPO / "config.yaml")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_conda_env_pins_equal_pyproject_and_need_no_relative_install():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # the workflow's environment runs every setting the schema offers: the encoders extra too
    deps = project["dependencies"] + project["optional-dependencies"]["encoders"]
    env = yaml.safe_load((REPO / "envs" / "rlseg.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(deps)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=" + python.split("=")[1]


def test_the_package_imports_without_a_workflow_folder(tmp_path):
    """The library reads its schema from the package, so it works installed, away from a checkout."""
    code = "import rlseg.config as c; print(c.load_config(c.SCHEMA.with_name('x.yaml'))['classes'])"
    pkg = tmp_path / "pkg"
    shutil.copytree(REPO / "src" / "rlseg", pkg / "rlseg")
    (pkg / "rlseg" / "x.yaml").write_text("classes: [disc]\n")
    proc = subprocess.run([sys.executable, "-c", code + "; print(c.__file__)"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(pkg)})
    assert proc.returncode == 0 and "['disc']" in proc.stdout, proc.stderr
    assert proc.stdout.split()[-1] == str(pkg / "rlseg" / "config.py")


def test_empty_class_folder_stops_before_any_job(tmp_path):
    (tmp_path / "imgs" / "disc").mkdir(parents=True)
    (tmp_path / "imgs" / "box").mkdir()
    (tmp_path / "imgs" / "box" / "a.jpg").write_bytes(b"x")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"images": {"source": "folder", "root": str(tmp_path / "imgs")}}))
    proc = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml", SMOKE, cfg), check=False)
    assert proc.returncode != 0 and f"{tmp_path / 'imgs' / 'disc'} has no .jpg" in proc.stdout + proc.stderr


def test_too_few_images_stops_naming_the_class_and_counts(tmp_path):
    from rlseg.ingest import TooFewImagesError, finalize_manifests

    rows = [{"path": f"{i}.jpg", "status": "used" if i < 3 else "skipped", "reason": "", "dhash": f"{i:016x}"}
            for i in range(5)]
    with pytest.raises(TooFewImagesError, match=r"class 'horse': 3 usable of 5 \(2 skipped\).*min_images = 4"):
        finalize_manifests({"horse": rows}, near_duplicate_bits=-1, min_images=4)


def _two_class_candidates() -> dict[str, list[dict]]:
    a = [{"path": "a1.jpg", "status": "used", "reason": "", "dhash": "ffff0000ffff0000"},
         {"path": "a2.jpg", "status": "used", "reason": "", "dhash": "ffff0000ffff0001"},
         {"path": "a3.jpg", "status": "used", "reason": "", "dhash": "0123456789abcdef"}]
    b = [{"path": "b1.jpg", "status": "used", "reason": "", "dhash": "0123456789abcdee"},
         {"path": "b2.jpg", "status": "used", "reason": "", "dhash": "00000000ffffffff"}]
    return {"cat": a, "dog": b}


def test_near_duplicates_under_two_classes_are_dropped_from_both():
    from rlseg.ingest import finalize_manifests

    out = finalize_manifests(_two_class_candidates(), near_duplicate_bits=2)
    st = {r["path"]: (r["status"], r["reason"]) for rows in out.values() for r in rows}
    assert st["a1.jpg"][0] == "used" and st["a2.jpg"] == ("skipped", "near-duplicate of a1.jpg")
    assert st["a3.jpg"][0] == "skipped" and "under class dog" in st["a3.jpg"][1]
    assert st["b1.jpg"][0] == "skipped" and "under class cat" in st["b1.jpg"][1]
    assert st["b2.jpg"][0] == "used"


def test_shared_images_kept_under_both_classes_are_never_their_negatives(tmp_path):
    from rlseg.ingest import finalize_manifests, negative_paths, write_manifest

    out = finalize_manifests(_two_class_candidates(), near_duplicate_bits=2, shared="keep")
    st = {r["path"]: r["status"] for class_rows in out.values() for r in class_rows}
    assert st == {"a1.jpg": "used", "a2.jpg": "skipped", "a3.jpg": "used", "b1.jpg": "used", "b2.jpg": "used"}
    for i, (cls, class_rows) in enumerate(out.items()):
        for j, r in enumerate(class_rows):
            r["sha1"] = f"{i}{j}"
        write_manifest(tmp_path / f"{cls}.csv", class_rows)
    # b1 is a near-duplicate of cat's a3 (1 bit): it holds a cat and must not push cats to background
    assert negative_paths(tmp_path / "cat.csv", [tmp_path / "dog.csv"], near_duplicate_bits=2) == ["b2.jpg"]
    assert negative_paths(tmp_path / "dog.csv", [tmp_path / "cat.csv"], near_duplicate_bits=2) == ["a1.jpg"]
    assert negative_paths(tmp_path / "cat.csv", [tmp_path / "dog.csv"], near_duplicate_bits=-1) == ["b1.jpg", "b2.jpg"]


@pytest.mark.slow
def test_a_job_sets_its_openmp_threads_to_sleep_while_waiting():
    """Whatever the user's environment says: jobs share cores, and a spinning thread takes one from another job."""
    code = ("import os; from rlseg.pipeline import setup_job; setup_job(1); import torch; "
            "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given in (None, "ACTIVE"):
        run_env = env if given is None else {**env, "OMP_WAIT_POLICY": given}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env, check=True)
        assert out.stdout.split() == ["PASSIVE", "1"]
