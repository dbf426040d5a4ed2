"""The recipes of docs/extending.md, followed as a user follows them."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from rlseg import regularized_loss
from rlseg.io import write_csv
from rlseg.regularized_loss import TERMS, LossTerm, LossWeights, weight_names
from rlseg.report import training_curves
from rlseg.schedule import SingleClassConfig
from rlseg.settings import schema
from rlseg.train import train_single_class

TINY = dict(resolutions=[64], anneal_epochs=1, normal_epochs=1, transfer_epochs=0, negative_epochs=0, batch_size=4,
            decoder_channels=[16, 8, 8, 8, 8])


def test_every_term_is_weighed_by_a_setting():
    """Each term's weight is a LossWeights field with a lambda_<weight> setting in the schema and the training
    settings: the table, the stage plans and the config cannot drift apart."""
    sc = schema()["properties"]["single_class"]["properties"]
    settings = {f.name for f in fields(SingleClassConfig)}
    assert {t.weight for t in TERMS} <= set(weight_names()) <= {f.name for f in fields(LossWeights)}
    for w in weight_names():
        assert f"lambda_{w}" in sc and f"lambda_{w}" in settings
    assert len({t.name for t in TERMS}) == len(TERMS)


@pytest.mark.slow
def test_recipe_a_loss_term(monkeypatch, tmp_path):
    """docs/extending.md, "A loss term": one entry in TERMS reaches the loss, history.csv and the figure."""

    def compactness(loss, batch):
        if batch.positives is None:
            return None
        x = batch.positives[0]
        return (x[:, 1:] - x[:, :-1]).abs().mean()

    monkeypatch.setattr(regularized_loss, "TERMS", [*TERMS, LossTerm("compactness", "pos", compactness)])
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    out = train_single_class(SingleClassConfig(**TINY), lambda r: (images, None, None), tmp_path / "run",
                             on_epoch=None, device="cpu")
    assert [r["stage"] for r in out["history"]] == ["anneal", "normal"]
    assert all(r["compactness"] > 0 for r in out["history"])
    write_csv(tmp_path / "history.csv", out["history"])
    assert "compactness" in (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    training_curves(tmp_path / "history.csv", tmp_path / "curves.svg", "with a new term")
    assert 'id="loss-compactness"' in (tmp_path / "curves.svg").read_text()


def test_recipe_a_stage(monkeypatch, tmp_path):
    """docs/extending.md, "A stage": an entry in schedule.STAGES and its place in stage_sequence."""
    from rlseg import schedule, train
    from rlseg.schedule import Stage, stage_plans, stage_sequence

    monkeypatch.setitem(schedule.STAGES, "polish", Stage("polish", "transfer_epochs"))

    def with_polish(cfg, resolution_index, from_weights, with_negatives):
        return [*stage_sequence(cfg, resolution_index, from_weights, with_negatives), "polish"]

    monkeypatch.setattr(train, "stage_sequence", with_polish)
    cfg = SingleClassConfig(**{**TINY, "transfer_epochs": 2})
    assert [p.stage for p in stage_plans(cfg, "polish")] == ["polish", "polish"]
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    out = train_single_class(cfg, lambda r: (images, None, None), tmp_path, on_epoch=None, device="cpu")
    assert [r["stage"] for r in out["history"]] == ["anneal", "normal", "polish", "polish"]


@pytest.mark.slow
def test_recipe_an_encoder(monkeypatch):
    """docs/extending.md, "An encoder": an smp encoder's name in the schema's single_class.encoder enum is all the
    U-Net needs (its ImageNet weights download on first use; here it is built without them)."""
    from rlseg.architectures import check_unet
    from rlseg.models import build_unet
    from rlseg.settings import ConfigError

    enum = schema()["properties"]["single_class"]["properties"]["encoder"]
    with pytest.raises(ConfigError, match="resnet18"):
        check_unet({"encoder": "resnet18"})
    monkeypatch.setitem(enum, "enum", [*enum["enum"], "resnet18"])
    check_unet({"encoder": "resnet18"})
    model = build_unet({"encoder": "resnet18", "decoder_channels": [32, 16, 16, 8, 8]}, pretrained=False).eval()
    with torch.no_grad():
        probs = model(torch.rand(2, 3, 64, 64))
    assert probs.shape == (2, 2, 64, 64) and torch.allclose(probs.sum(1), torch.ones(2, 64, 64))
    assert not any(p.requires_grad for p in model.encoder.parameters())
