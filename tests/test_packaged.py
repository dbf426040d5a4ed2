"""The packaged start (base_model.source: packaged), the image-list base source and multi-scale + flip inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlseg import packaged
from rlseg.architectures import unet_arch
from rlseg.checkpoint import load_weights, save_weights
from rlseg.ingest import read_image_list
from rlseg.models import build_multiclass, build_unet
from rlseg.multiclass import predict_full
from rlseg.packaged import check_packaged, export_start, materialise_start, packaged_file, packaged_start
from rlseg.pipeline import run_base_model
from rlseg.settings import ConfigError, defaults

SC = defaults("single_class")


def test_image_list_paths_relative_to_the_list(tmp_path):
    (tmp_path / "imgs").mkdir()
    lst = tmp_path / "lists" / "base.txt"
    lst.parent.mkdir()
    lst.write_text("# photos\n\n../imgs/a.jpg\n  ../imgs/b.png  \n")
    assert read_image_list(lst) == [tmp_path / "imgs" / "a.jpg", tmp_path / "imgs" / "b.png"]


@pytest.mark.parametrize("content", [None, "# nothing\n\n"])
def test_image_list_missing_or_empty_is_named(tmp_path, content):
    lst = tmp_path / "base.txt"
    if content is not None:
        lst.write_text(content)
    with pytest.raises(FileNotFoundError, match="base.txt"):
        read_image_list(lst)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A packaged start exported from a U-Net whose decoder was changed, installed in a temporary folder."""
    torch.manual_seed(0)
    model = build_unet(unet_arch(SC))
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(torch.randn_like(p))
    save_weights(tmp_path / "base.pt", model, meta={"resolution": 128})
    history = [{"stage": "normal", "epoch": "0", "loss": "0.5"}]
    out = export_start(tmp_path / "base.pt", SC, history, ["x/a.jpg", "y/b.jpg"], tmp_path / "weights")
    monkeypatch.setattr(packaged, "WEIGHTS_DIR", tmp_path / "weights")
    return model, out


def test_export_keeps_the_decoder_only_and_says_what_it_learned_from(shipped):
    model, out = shipped
    assert out == packaged_file(SC["encoder"])
    weights = torch.load(out, weights_only=True)
    assert weights and not any(k.startswith("encoder.") for k in weights)
    assert out.stat().st_size < 4e6
    meta = packaged_start(SC["encoder"])
    assert meta["images"] == 2 and meta["arch"] == unet_arch(SC) and meta["history"][0]["loss"] == "0.5"


def test_materialised_start_is_the_trained_model(shipped, tmp_path):
    model, _ = shipped
    run_base_model({"source": "packaged"}, SC, str(tmp_path), str(tmp_path / "m.pt"), str(tmp_path / "h.csv"),
                   str(tmp_path))
    got = load_weights(tmp_path / "m.pt", build_unet(unet_arch(SC), pretrained=False))["state_dict"]
    want = model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert (tmp_path / "h.csv").read_text().startswith("stage,epoch,loss")


def test_packaged_start_that_does_not_fit_is_refused_naming_the_key(shipped):
    with pytest.raises(ConfigError, match="decoder_channels"):
        check_packaged({**SC, "decoder_channels": [64, 32, 16, 16, 16]})
    with pytest.raises(ConfigError, match="packaged_start target"):
        check_packaged({**SC, "encoder": "mobilenet_v2"})


def test_tampered_or_damaged_packaged_start_is_named(shipped, tmp_path):
    _, out = shipped
    out.write_bytes(out.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="SHA-1"):
        materialise_start(SC, tmp_path / "m.pt", tmp_path / "h.csv")
    out.with_suffix(".json").write_text("{")
    with pytest.raises(ConfigError, match="metadata"):
        check_packaged(SC)
    assert not (tmp_path / "m.pt").exists()


def test_the_shipped_start_fits_the_default_unet():
    """rlseg ships a packaged start for the offline encoder, and the photo preset can use it."""
    meta = packaged_start(SC["encoder"])
    check_packaged(SC)
    assert meta["images"] > 1000 and json.loads(json.dumps(meta["history"]))


@pytest.fixture(scope="module")
def deeplab():
    torch.manual_seed(0)
    return build_multiclass({"arch": "deeplabv3plus", "num_classes": 4}, pretrained=False).eval()


def _photo(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_flip_averaging_is_mirror_equivariant(deeplab):
    im = _photo(64, 96)
    pred = predict_full(deeplab, im, torch.device("cpu"), flip=True)
    mirrored = predict_full(deeplab, im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), torch.device("cpu"), flip=True)
    assert np.array_equal(pred[:, ::-1], mirrored)


def test_multi_scale_labels_every_pixel_of_any_size(deeplab):
    im = _photo(45, 71)
    single = predict_full(deeplab, im, torch.device("cpu"))
    multi = predict_full(deeplab, im, torch.device("cpu"), scales=(0.75, 1.0, 1.25), flip=True)
    assert single.shape == multi.shape == (45, 71) and multi.max() < 4
    assert np.array_equal(single, predict_full(deeplab, im, torch.device("cpu"), scales=[1.0]))


def test_a_photo_over_the_training_cap_is_seen_at_the_cap_and_labelled_at_full_size(deeplab, tmp_path):
    from rlseg.inference import load_model, segment

    cpu = torch.device("cpu")
    small = _photo(48, 64)
    big = small.resize((256, 192), Image.Resampling.NEAREST)  # the same scene with 16 times the pixels
    labels = predict_full(deeplab, big, cpu, scales=(0.75, 1.0), flip=True, max_short_side=48)
    seen = predict_full(deeplab, big.resize((64, 48), Image.Resampling.BILINEAR), cpu, scales=(0.75, 1.0), flip=True)
    assert labels.shape == (192, 256) and (labels[2::4, 2::4] == seen).mean() > 0.9
    assert np.array_equal(predict_full(deeplab, small, cpu, max_short_side=48), predict_full(deeplab, small, cpu))
    save_weights(tmp_path / "mc.pt", deeplab, meta={"max_short_side": 48})
    loaded = load_model(tmp_path / "mc.pt", cpu)
    assert np.array_equal(segment(loaded, [big], cpu)[0], predict_full(deeplab, big, cpu, max_short_side=48))
    save_weights(tmp_path / "old.pt", deeplab, meta={"epochs": 1})  # weights written before the cap was recorded
    assert load_model(tmp_path / "old.pt", cpu).max_short_side is None


@pytest.fixture(scope="module")
def unet():
    from rlseg.inference import LoadedModel

    torch.manual_seed(0)
    return LoadedModel(build_unet(unet_arch(SC), pretrained=False).eval(), "single_class", 64)


def test_scaled_sides_are_multiples_of_32():
    from rlseg.inference import scaled_sides

    assert scaled_sides(384, [0.75, 1.0, 1.25]) == [288, 384, 480]
    assert scaled_sides(128, [0.1, 1.3]) == [32, 160]


def test_single_class_flip_averaging_is_mirror_equivariant(unet):
    from rlseg.inference import object_probability

    im = _photo(50, 70, seed=3)
    cpu = torch.device("cpu")
    prob = object_probability(unet, [im], cpu, scales=(0.75, 1.0), flip=True)[0]
    mirrored = object_probability(unet, [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], cpu, scales=(0.75, 1.0),
                                  flip=True)[0]
    assert prob.shape == (50, 70) and np.allclose(prob[:, ::-1], mirrored, atol=1e-5)


def test_single_class_multi_scale_is_the_mean_of_single_passes(unet):
    from rlseg.inference import object_probability, segment

    ims, cpu = [_photo(40, 90, seed=1), _photo(77, 33, seed=2)], torch.device("cpu")
    at = {side: object_probability(unet, ims, cpu, side) for side in (64, 96)}
    multi = object_probability(unet, ims, cpu, 64, scales=(1.0, 1.5))
    for i in range(2):
        assert np.allclose(multi[i], (at[64][i] + at[96][i]) / 2, atol=1e-6)
    labels = segment(unet, ims, cpu, 7, 64, scales=(1.0, 1.5))
    assert [lab.shape for lab in labels] == [(40, 90), (77, 33)]
    assert all(np.array_equal(lab, np.where(m > 0.5, 7, 0)) for lab, m in zip(labels, multi, strict=True))


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("base, sc, match", [
    ({"source": "list", "root": "no/such/list.txt"}, {}, "image list 'no/such/list.txt' is missing"),
    ({"source": "packaged"}, {"decoder_channels": [64, 32, 16, 16, 16]}, "decoder_channels"),
])
def test_config_check_names_a_base_model_that_cannot_start(base, sc, match):
    from rlseg.config import load_config

    with pytest.raises(ConfigError, match=match):
        load_config(REPO / "config.yaml", overrides={"single_class": {"init": "base", **sc}, "base_model": base})


def test_the_photo_preset_starts_from_the_packaged_start_and_passes_the_config_check():
    from rlseg.config import load_config

    cfg = load_config(REPO / "config.yaml", REPO / "configs" / "photos.yaml")
    assert cfg["base_model"]["source"] == "packaged" and cfg["single_class"]["init"] == "base"
