"""Training: stage plans, the resume contract (bit for bit on the CPU), refusals, non-finite losses."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from rlseg.checkpoint import CheckpointMismatch, load_weights, save_weights
from rlseg.data import to_float
from rlseg.feature_cache import FeatureCache
from rlseg.models import build_unet
from rlseg.regularized_loss import LossWeights
from rlseg.runtime import NonFiniteLossError
from rlseg.schedule import SingleClassConfig, anneal_sigmas, negative_sample, stage_plans
from rlseg.train import fit, train_single_class

TINY = dict(resolutions=[64], anneal_epochs=2, normal_epochs=2, transfer_epochs=1, negative_epochs=1, batch_size=4,
            decoder_channels=[16, 8, 8, 8, 8])


def tiny_data(n=6, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    images[:, :, 16:48, 16:48] = 200  # a bright square object
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    masks[:, 16:48, 16:48] = 1
    return images, masks


def test_stage_plans_follow_the_paper():
    cfg = SingleClassConfig()
    anneal = stage_plans(cfg, "anneal")
    assert [p.sigma for p in anneal] == pytest.approx(anneal_sigmas(15))
    assert all((p.weights.reg, p.weights.vol, p.weights.pos) == (1, 1, 1) for p in anneal)
    normal = stage_plans(cfg, "normal")
    assert len(normal) == 50 and normal[0].weights.reg == 100 and normal[0].sigma == 0.15
    neg = stage_plans(cfg, "negative")
    assert len(neg) == 200 and neg[0].negatives and neg[0].weights.neg == 2


def test_annealing_weights_are_their_own_settings():
    """lambda_vol / lambda_pos weigh the stages after annealing; annealing has its own three weights."""
    cfg = SingleClassConfig(lambda_vol=3.0, lambda_pos=4.0, lambda_vol_anneal=0.5, lambda_pos_anneal=0.25,
                            lambda_reg_anneal=2.0)
    anneal = stage_plans(cfg, "anneal")
    assert {(p.weights.reg, p.weights.vol, p.weights.pos) for p in anneal} == {(2.0, 0.5, 0.25)}
    normal = stage_plans(cfg, "normal")[0].weights
    assert (normal.reg, normal.vol, normal.pos, normal.neg) == (100.0, 3.0, 4.0, 2.0)
    with pytest.raises(TypeError):
        LossWeights(100, 1, 1, 2, 0.15)  # by keyword only


def test_stage_plans_restart_adam_and_step_the_lr_as_the_reference():
    # SingleClassRL: one train_normal call (a new Adam, StepLR(100, 0.1)) per annealing step and per stage
    cfg = SingleClassConfig(optimizer_restart=True)
    assert all(p.restart for p in stage_plans(cfg, "anneal"))
    for stage in ("normal", "transfer", "negative"):
        plans = stage_plans(cfg, stage)
        assert [p.restart for p in plans] == [True] + [False] * (len(plans) - 1)
    assert [p.lr_scale for p in stage_plans(cfg, "negative")] == pytest.approx([1.0] * 100 + [0.1] * 100)
    assert {p.lr_scale for p in stage_plans(cfg, "normal")} == {1.0}
    one_adam = SingleClassConfig()  # the default
    plans = [p for s in ("anneal", "normal", "negative") for p in stage_plans(one_adam, s)]
    assert not any(p.restart for p in plans) and {p.lr_scale for p in plans} == {1.0}


def test_fit_restarts_adam_where_the_plan_says_and_follows_the_lr_scale(tmp_path):
    cfg = SingleClassConfig(**{**TINY, "normal_epochs": 3, "lr_step_epochs": 2, "optimizer_restart": True})
    model = build_unet(cfg.arch, pretrained=False)
    images, _ = tiny_data()
    plans = stage_plans(cfg, "anneal") + stage_plans(cfg, "normal")
    steps, lrs = [], []

    def record(opt, args, kwargs):
        steps.append(max((int(s["step"]) for s in opt.state.values()), default=0))
        lrs.append(opt.param_groups[0]["lr"])

    hook = register_optimizer_step_pre_hook(record)
    try:
        fit(model, images, plans, cfg, tmp_path / "c.pt", {}, device=torch.device("cpu"))
    finally:
        hook.remove()
    # two batches per epoch; Adam's step count before each step: back to 0 at each annealing epoch and at the
    # normal stage's start only
    assert steps == [0, 1, 0, 1, 0, 1, 2, 3, 4, 5]
    assert lrs == pytest.approx([1e-3] * 8 + [1e-4] * 2)  # normal epoch 3 is past lr_step_epochs = 2


def _run(tmp_path, stop_after=None, cfg=None):
    cfg = cfg or SingleClassConfig(**TINY)
    torch.manual_seed(0)
    model = build_unet(cfg.arch, pretrained=False)
    images, masks = tiny_data()
    plans = stage_plans(cfg, "anneal") + stage_plans(cfg, "normal")

    def stop(row):
        if stop_after is not None and row["epoch"] == stop_after:
            raise KeyboardInterrupt

    return model, lambda: fit(model, images, plans, cfg, tmp_path / "ckpt.pt", {"cfg": "x"}, masks=masks,
                              device=torch.device("cpu"), on_epoch=stop)


@pytest.mark.parametrize("batchnorm", ["fixed", "train"])
def test_resume_ends_with_identical_weights(tmp_path, batchnorm):
    # with "train" the encoder's running statistics move every batch: they must resume too
    cfg = SingleClassConfig(**TINY, encoder_batchnorm=batchnorm)
    full_model, run = _run(tmp_path / "a", cfg=cfg)
    (tmp_path / "a").mkdir()
    rows_full = run()
    (tmp_path / "b").mkdir()
    _, run_b = _run(tmp_path / "b", stop_after=2, cfg=cfg)
    with pytest.raises(KeyboardInterrupt):
        run_b()
    resumed_model, run_c = _run(tmp_path / "b", cfg=cfg)  # a fresh process would start like this
    rows_resumed = run_c()
    assert len(rows_resumed) == len(rows_full) == 4
    for (k, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_centres_follow_the_flips_and_the_middle_is_the_papers_box(tmp_path):
    from rlseg.train import _batch_centres

    centres = torch.tensor([[0.2, 0.1], [0.7, 0.6], [0.5, 0.5]])
    out = _batch_centres(centres, torch.tensor([1, 0]), torch.tensor([True, False]))
    assert torch.allclose(out, torch.tensor([[0.7, 0.4], [0.2, 0.1]]))
    assert torch.equal(centres[0], torch.tensor([0.2, 0.1]))  # the epoch's flips leave the points as they were
    # every centre at the middle: the same run, loss for loss, as without centres
    cfg = SingleClassConfig(**TINY)
    images, _ = tiny_data()
    plans = stage_plans(cfg, "normal")
    rows = []
    for name, c in (("a", None), ("b", torch.full((len(images), 2), 0.5))):
        torch.manual_seed(0)
        model = build_unet(cfg.arch, pretrained=False)
        rows.append(fit(model, images, plans, cfg, tmp_path / f"{name}.pt", {}, device=torch.device("cpu"),
                        centres=c))
    assert [r["positional"] for r in rows[0]] == pytest.approx([r["positional"] for r in rows[1]])
    # a corner for each image: the positional term asks for other pixels
    torch.manual_seed(0)
    model = build_unet(cfg.arch, pretrained=False)
    corner = fit(model, images, plans[:1], cfg, tmp_path / "c.pt", {}, device=torch.device("cpu"),
                 centres=torch.zeros(len(images), 2))
    assert corner[0]["positional"] != pytest.approx(rows[0][0]["positional"])


def _one_epoch(path, run_config):
    """A model trained one normal epoch, checkpointed at ``path``; returns what a further fit needs."""
    cfg = SingleClassConfig(**TINY)
    model = build_unet(cfg.arch, pretrained=False)
    images, _ = tiny_data()
    plans = stage_plans(cfg, "normal")
    fit(model, images, plans[:1], cfg, path, run_config, device=torch.device("cpu"))
    return cfg, model, images, plans


def test_checkpoint_from_another_configuration_is_refused(tmp_path):
    cfg, model, images, plans = _one_epoch(tmp_path / "c.pt", {"lr": 0.001})
    with pytest.raises(CheckpointMismatch, match=r"lr: 0.001 -> 0.01"):
        fit(model, images, plans, cfg, tmp_path / "c.pt", {"lr": 0.01}, device=torch.device("cpu"))


def test_weights_need_the_same_architecture(tmp_path):
    a = build_unet({"decoder_channels": [16, 8, 8, 8, 8]}, pretrained=False)
    save_weights(tmp_path / "w.pt", a)
    b = build_unet({"decoder_channels": [32, 8, 8, 8, 8]}, pretrained=False)
    with pytest.raises(CheckpointMismatch, match="decoder_channels"):
        load_weights(tmp_path / "w.pt", b)
    c = build_unet({"decoder_channels": [16, 8, 8, 8, 8]}, pretrained=False)
    load_weights(tmp_path / "w.pt", c)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))


def test_non_finite_loss_stops_with_terms_and_keeps_last_checkpoint(tmp_path):
    cfg, model, images, plans = _one_epoch(tmp_path / "n.pt", {"k": 1})
    saved = torch.load(tmp_path / "n.pt", weights_only=True)
    bad_plans = copy.deepcopy(plans)
    bad_plans[1].weights.reg = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 1.*sparse_crf"):
        fit(model, images, bad_plans, cfg, tmp_path / "n.pt", {"k": 1}, device=torch.device("cpu"))
    kept = torch.load(tmp_path / "n.pt", weights_only=True)
    assert kept["epoch"] == saved["epoch"] == 0


def test_train_single_class_all_stages_with_negatives(tmp_path):
    cfg = SingleClassConfig(**{**TINY, "resolutions": [64, 96]})
    images, masks = tiny_data()
    negatives, _ = tiny_data(seed=1)

    def load(res):
        def f(x):
            return torch.nn.functional.interpolate(x.float(), size=(res, res)).to(torch.uint8)

        return f(images), f(negatives), f(masks[:, None])[:, 0]

    out = train_single_class(cfg, load, tmp_path, with_negatives=True, on_epoch=None, device="cpu")
    stages = [(r["resolution"], r["stage"]) for r in out["history"]]
    assert stages == [(64, "anneal")] * 2 + [(64, "normal")] * 2 + [(96, "transfer"), (96, "negative")]
    assert "negative" in out["history"][-1] and "f_measure" in out["history"][0]
    assert sorted(out["models"]) == [64, 96]
    assert not list(tmp_path.glob("checkpoint_*.pt"))
    # the base-model path: normal stage from these weights, no annealing
    out2 = train_single_class(SingleClassConfig(**TINY), load, tmp_path / "t", init_weights=out["models"][64],
                              on_epoch=None, device="cpu")
    assert [r["stage"] for r in out2["history"]] == ["normal", "normal"]


def test_gt_supervision_learns_the_mask(tmp_path):
    cfg = SingleClassConfig(**{**TINY, "supervision": "gt", "normal_epochs": 6, "lr": 1e-2})
    images, masks = tiny_data(n=8)
    out = train_single_class(cfg, lambda r: (images, None, masks), tmp_path, on_epoch=None, device="cpu")
    assert out["history"][-1]["cross_entropy"] < out["history"][0]["cross_entropy"]


@pytest.mark.parametrize("with_negatives", [False, True], ids=["positives", "with-negatives"])
def test_feature_cache_runs_the_encoder_once_per_image_and_flip_and_keeps_the_losses(tmp_path, with_negatives):
    images, masks = tiny_data()
    negatives = tiny_data(n=3, seed=1)[0] if with_negatives else None
    results = {}
    for mb in (0, 64):
        cfg = SingleClassConfig(**{**TINY, "normal_epochs": 6, "feature_cache_mb": mb})
        torch.manual_seed(0)
        model = build_unet(cfg.arch, pretrained=False)
        calls: list[int] = []
        model.encoder.register_forward_hook(lambda m, i, o, calls=calls: calls.append(i[0].shape[0]))
        plans = stage_plans(cfg, "normal") + (stage_plans(cfg, "negative") if with_negatives else [])
        rows = fit(model, images, plans, cfg, tmp_path / f"{mb}.pt", {"mb": mb}, negatives=negatives, masks=masks,
                   device=torch.device("cpu"))
        results[mb] = (rows, sum(calls))
    (rows0, images0), (rows1, images1) = results[0], results[64]
    # an image's features computed alone differ from those computed in a batch by float rounding (~1e-5); Adam's
    # normalised steps carry that into near-zero gradients' weights, so the losses are compared, not the weights
    assert [r["loss"] for r in rows0] == pytest.approx([r["loss"] for r in rows1], rel=1e-3)
    n = len(images) + (len(negatives) if with_negatives else 0)
    assert images0 == len(images) * 6 + (n if with_negatives else 0)  # every epoch through the encoder
    assert images1 <= 2 * n  # each image and flip through the encoder once


def test_feature_cache_returns_each_images_own_features_in_any_order():
    model = build_unet(SingleClassConfig(**TINY).arch, pretrained=False).eval()
    x = torch.rand(4, 3, 64, 64)
    cache = FeatureCache(limit_bytes=1 << 30)
    cache.features(model, x, [(i, False) for i in range(4)])
    cache.features(model, x.flip(-1), [(i, True) for i in range(4)])
    batch = torch.stack([x[2].flip(-1), x[0], x[3].flip(-1), x[1]])
    calls = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(1))
    got = cache.features(model, batch, [(2, True), (0, False), (3, True), (1, False)])
    assert not calls
    for a, b in zip(got, model.features(batch), strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    assert len(cache.store) == 8


def test_feature_cache_keeps_no_more_than_its_limit():
    cfg = SingleClassConfig(**TINY)
    model = build_unet(cfg.arch, pretrained=False).eval()
    x = torch.rand(4, 3, 64, 64)
    one = sum(f[0].numel() * f[0].element_size() for f in model.features(x))
    cache = FeatureCache(limit_bytes=2 * one)
    cache.features(model, x, [(i, False) for i in range(4)])
    assert len(cache.store) == 2 and cache.used == 2 * one


def test_feature_cache_fill_encodes_every_image_and_flip_a_batch_at_a_time_up_to_its_limit():
    model = build_unet(SingleClassConfig(**TINY).arch, pretrained=False).eval()
    images = tiny_data(n=5)[0]
    calls: list[int] = []
    hook = model.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    cache = FeatureCache(limit_bytes=1 << 30)
    cache.fill(model, images, flip=True, device=torch.device("cpu"), batch_size=4)
    assert calls == [4, 4, 2] and sorted(cache.store) == [(i, f) for i in range(5) for f in (False, True)]
    x = to_float(torch.stack([images[3].flip(-1), images[0]]))
    for got, alone in zip(cache.features(model, x, [(3, True), (0, False)]), model.features(x), strict=True):
        assert torch.allclose(got, alone, atol=1e-4)  # the batch's rounding, not another image's features
    assert len(calls) == 4  # features() found both: only the check's own model.features ran
    hook.remove()
    again = FeatureCache(limit_bytes=1 << 30)
    again.fill(model, images, flip=True, device=torch.device("cpu"), batch_size=4)
    assert all(torch.equal(a, b) for k in cache.store for a, b in zip(cache.store[k], again.store[k], strict=True))
    one = cache.used // 10
    small = FeatureCache(limit_bytes=3 * one)
    small.fill(model, images, flip=False, device=torch.device("cpu"), batch_size=4)
    assert sorted(small.store) == [(0, False), (1, False), (2, False)] and small.used == 3 * one


def test_feature_cache_is_off_while_the_encoder_batchnorm_trains(tmp_path):
    # batch statistics make an image's features depend on its batch and on the epoch: nothing can be reused
    cfg = SingleClassConfig(**{**TINY, "normal_epochs": 3, "encoder_batchnorm": "train", "feature_cache_mb": 64})
    model = build_unet(cfg.arch, pretrained=False)
    calls: list[int] = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    images, _ = tiny_data()
    fit(model, images, stage_plans(cfg, "normal"), cfg, tmp_path / "c.pt", {}, device=torch.device("cpu"))
    assert sum(calls) == 3 * len(images) and max(calls) == cfg.batch_size


def test_negative_sample_is_fresh_each_epoch_deterministic_and_sized_by_the_ratio():
    a = [negative_sample(0, 0, e, n_pos=10, n_neg=100, ratio=1.5) for e in range(3)]
    assert [len(s) for s in a] == [15, 15, 15]
    assert all(len(set(s.tolist())) == 15 and int(s.max()) < 100 for s in a)
    assert not torch.equal(a[0], a[1])  # a fresh sample every epoch
    assert all(torch.equal(x, negative_sample(0, 0, e, 10, 100, 1.5)) for e, x in enumerate(a))  # same on rerun
    assert not torch.equal(a[0], negative_sample(1, 0, 0, 10, 100, 1.5))  # another seed, another sample
    assert torch.equal(negative_sample(0, 0, 0, 10, 100, 0), torch.arange(100))  # 0: all of them
    assert torch.equal(negative_sample(0, 0, 0, 10, 12, 2.0), torch.arange(12))  # asks for more than there are


def test_negative_epoch_sees_only_its_sample(tmp_path):
    cfg = SingleClassConfig(**{**TINY, "negative_epochs": 3, "negative_ratio": 0.5, "feature_cache_mb": 0})
    model = build_unet(cfg.arch, pretrained=False)
    images, _ = tiny_data(n=6)
    negatives = tiny_data(n=20, seed=1)[0]
    seen: list[int] = []
    model.encoder.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    fit(model, images, stage_plans(cfg, "negative"), cfg, tmp_path / "n.pt", {"n": 1}, negatives=negatives,
        device=torch.device("cpu"))
    assert sum(seen) == 3 * (6 + 3)  # each epoch: the class's 6 images and ceil(0.5 x 6) negatives


def test_auto_floor_keeps_the_papers_ratio_to_the_target():
    # the paper's 0.15 floor under its 0.5 target; a number stays as given
    assert SingleClassConfig(**{**TINY, "vol_target": 0.5, "vol_minimum": "auto"}).floor == pytest.approx(0.15)
    assert SingleClassConfig(**{**TINY, "vol_target": 0.2, "vol_minimum": "auto"}).floor == pytest.approx(0.06)
    assert SingleClassConfig(**{**TINY, "vol_target": 0.2, "vol_minimum": 0.1}).floor == 0.1
    loss = SingleClassConfig(**{**TINY, "vol_target": 0.2, "vol_minimum": "auto"}).loss(LossWeights())
    assert loss.vol_minimum == pytest.approx(0.06)
    with pytest.raises(ValueError, match="estimate the target first"):
        SingleClassConfig(**{**TINY, "vol_target": "auto", "vol_minimum": "auto"}).floor  # noqa: B018


def test_auto_volumetric_target_is_the_starts_object_size_and_resumes(tmp_path):
    from rlseg.inference import predict

    images, _ = tiny_data()
    start = build_unet(SingleClassConfig(**TINY).arch)
    save_weights(tmp_path / "start.pt", start)
    expected = float(predict(start, images, TINY["batch_size"], torch.device("cpu")).mean())
    cfg = SingleClassConfig(**{**TINY, "vol_target": "auto", "vol_minimum": 0.0})
    out = train_single_class(cfg, lambda r: (images, None, None), tmp_path / "a", init_weights=tmp_path / "start.pt",
                             on_epoch=None, device="cpu")
    recorded = load_weights(out["final"])["meta"]["vol_target"]
    assert recorded == pytest.approx(round(expected, 4)) and 0 < recorded < 1
    # the floor: a target never asks for less object than each image must have
    floored = SingleClassConfig(**{**TINY, "vol_target": "auto", "vol_minimum": 0.99})
    out = train_single_class(floored, lambda r: (images, None, None), tmp_path / "b",
                             init_weights=tmp_path / "start.pt", on_epoch=None, device="cpu")
    assert load_weights(out["final"])["meta"]["vol_target"] == 0.99
    with pytest.raises(ValueError, match="starting model"):
        train_single_class(cfg, lambda r: (images, None, None), tmp_path / "c", on_epoch=None, device="cpu")

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # cut off after its first epoch; the rerun estimates the same target
        train_single_class(cfg, lambda r: (images, None, None), tmp_path / "d", init_weights=tmp_path / "start.pt",
                           on_epoch=stop, device="cpu")
    out = train_single_class(cfg, lambda r: (images, None, None), tmp_path / "d", init_weights=tmp_path / "start.pt",
                             on_epoch=None, device="cpu")
    assert len(out["history"]) == 2 and load_weights(out["final"])["meta"]["vol_target"] == recorded


def test_auto_volumetric_target_needs_the_base_start():
    from rlseg.config import check_single_class
    from rlseg.settings import ConfigError, defaults

    check_single_class({**defaults("single_class"), "vol_target": "auto", "init": "base"})
    with pytest.raises(ConfigError, match="vol_target: auto.*init: base"):
        check_single_class({**defaults("single_class"), "vol_target": "auto", "init": "anneal"})


@pytest.mark.parametrize(("base", "single", "target"), [
    ({}, "auto", 0.5),  # the photo preset's classes: the base model has no start to estimate with
    ({"vol_target": None}, 0.3, 0.3),  # a number is the base model's too, as before the key existed
    ({"vol_target": 0.25}, "auto", 0.25),
])
def test_the_base_model_trains_with_a_number_for_the_size_prior(base, single, target):
    from rlseg.settings import base_model_settings, defaults

    settings = {**defaults("single_class"), "vol_target": single, "negatives": True, "center": "imagenet"}
    out = base_model_settings({"source": "classes", **base}, settings)
    # a class-agnostic model has no ImageNet classes to place its centre box with
    assert out["vol_target"] == target and out["negatives"] is False and out["center"] == "middle"
    own = ("vol_target", "negatives", "center")
    assert {k: v for k, v in out.items() if k not in own} == {k: v for k, v in settings.items() if k not in own}
