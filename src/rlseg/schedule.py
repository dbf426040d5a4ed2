"""What single-class training does, epoch by epoch: its settings (:class:`SingleClassConfig`), the stage plans
(annealing's rising sigma, normal, transfer, negative; Sec. 3.4) and each epoch's data order and negative sample,
pure functions of (seed, stage, epoch) so that a resumed run sees the batches an uninterrupted one would."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch

from rlseg.architectures import unet_arch
from rlseg.regularized_loss import LossWeights, RegularizedLoss, weight_names
from rlseg.settings import defaults

__all__ = ["EpochPlan", "SingleClassConfig", "anneal_sigmas", "epoch_order", "negative_sample", "single_class_settings",
           "stage_plans"]

_SC = defaults("single_class")
# the paper's per-image floor over its batch-mean target (the schema's defaults, 0.15 : 0.5): the ratio
# vol_minimum auto applies
FLOOR_RATIO = _SC["vol_minimum"] / _SC["vol_target"]


@dataclass
class SingleClassConfig:
    """Every setting of single-class training; the defaults are the schema's (the paper's reference implementation),
    described there (``config.schema.yaml``)."""

    encoder: str = _SC["encoder"]
    decoder: str = _SC["decoder"]
    decoder_channels: list[int] = field(default_factory=lambda: copy.deepcopy(_SC["decoder_channels"]))
    freeze_encoder: bool = _SC["freeze_encoder"]
    # "train": the reference's frozen encoder normalises with batch statistics
    encoder_batchnorm: str = _SC["encoder_batchnorm"]
    encoder_head: bool = _SC["encoder_head"]
    encoder_features: str = _SC["encoder_features"]
    decoder_convs: int | list[int] | None = _SC["decoder_convs"]  # None: the decoder's own (LIGHT_DECODER_CONVS)
    resolutions: list[int] = field(default_factory=lambda: copy.deepcopy(_SC["resolutions"]))
    anneal_epochs: int = _SC["anneal_epochs"]
    sigma_start: float = _SC["sigma_start"]
    sigma_end: float = _SC["sigma_end"]
    normal_epochs: int = _SC["normal_epochs"]
    transfer_epochs: int = _SC["transfer_epochs"]
    negative_epochs: int = _SC["negative_epochs"]
    lambda_reg: float = _SC["lambda_reg"]
    lambda_reg_anneal: float = _SC["lambda_reg_anneal"]
    lambda_vol_anneal: float = _SC["lambda_vol_anneal"]
    lambda_pos_anneal: float = _SC["lambda_pos_anneal"]
    lambda_vol: float = _SC["lambda_vol"]
    lambda_pos: float = _SC["lambda_pos"]
    lambda_neg: float = _SC["lambda_neg"]
    negatives_in_positional: bool = _SC["negatives_in_positional"]
    negative_ratio: float = _SC["negative_ratio"]  # negatives per own image, drawn afresh; 0: all, every epoch
    lambda_s: float = _SC["lambda_s"]
    vol_target: float | str = _SC["vol_target"]  # "auto": train_single_class estimates it from the start
    vol_minimum: float | str = _SC["vol_minimum"]  # "auto": FLOOR_RATIO of vol_target (the paper's 0.15 : 0.5)
    border_width: int = _SC["border_width"]
    center: str = _SC["center"]  # "imagenet": the workflow gives train_single_class each photo's centre point
    center_min_ratio: float = _SC["center_min_ratio"]
    border_sides: list[str] = field(default_factory=lambda: copy.deepcopy(_SC["border_sides"]))
    diagonal: bool = _SC["diagonal"]
    loss_form: str = _SC["loss_form"]  # or "printed": the paper's equations as printed
    supervision: str = _SC["supervision"]  # or "gt": cross-entropy on true masks
    batch_size: int = _SC["batch_size"]
    lr: float = _SC["lr"]
    # True is the reference's training loop: each annealing step and each stage is its own train_normal call, with
    # a fresh Adam and a StepLR (x0.1 every 100 epochs) that only a stage longer than 100 epochs reaches. The paper
    # prints neither; one Adam through all stages (False) measured better here (docs/results.md), so it is the default.
    optimizer_restart: bool = _SC["optimizer_restart"]
    lr_step_epochs: int = _SC["lr_step_epochs"]
    lr_gamma: float = _SC["lr_gamma"]
    flip: bool = _SC["flip"]
    seed: int = _SC["seed"]
    feature_cache_mb: int = _SC["feature_cache_mb"]  # frozen encoder's features; moves results by rounding only
    cpu_kernels: bool = _SC["cpu_kernels"]  # the decoder's CPU forms (rlseg.models.cpu_kernels): speed and rounding

    @classmethod
    def from_dict(cls, d: dict) -> SingleClassConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown single-class setting(s): {sorted(unknown)}")
        return cls(**d)

    @property
    def floor(self) -> float:
        """The volumetric term's per-image floor: ``vol_minimum``, or with ``auto`` the paper's ratio of floor to
        target applied to ``vol_target`` (which must be a number by then)."""
        if self.vol_minimum != "auto":
            return float(self.vol_minimum)
        if isinstance(self.vol_target, str):
            raise ValueError("vol_minimum 'auto' follows vol_target: estimate the target first")
        return round(FLOOR_RATIO * self.vol_target, 4)

    @property
    def arch(self) -> dict:
        return unet_arch(asdict(self))

    def loss(self, weights: LossWeights) -> RegularizedLoss:
        printed = self.loss_form == "printed"
        return RegularizedLoss(
            weights=weights, diagonal=self.diagonal, vol_target=self.vol_target, vol_minimum=self.floor,
            lambda_s=self.lambda_s, small_reduction="sum" if printed else "mean", border_width=self.border_width,
            center_half=None if printed else 2, center_size=3, border_mode="band" if printed else "sides",
            border_sides=tuple(self.border_sides), negative_printed=False,
            negatives_in_positional=self.negatives_in_positional,
        )




def single_class_settings(settings: dict) -> tuple[SingleClassConfig, bool]:
    """The config's ``single_class`` block as training settings, and whether negatives are used; ``init`` and
    ``negatives`` are the workflow's keys, not training's."""
    cfg_dict = dict(settings)
    cfg_dict.pop("init", None)
    use_negatives = bool(cfg_dict.pop("negatives", False))
    return SingleClassConfig.from_dict(cfg_dict), use_negatives

def anneal_sigmas(steps: int = 15, start: float = 0.05, end: float = 0.15, printed: bool = False) -> list[float]:
    """Eq. 8 schedule of sigma over the annealing steps.

    Reference (default): ``start`` to ``end`` inclusive, linearly. Printed: sigma(i) = start + i/n (end - start),
    i = 1..n, which starts at 0.0567 for n = 15.
    """
    if steps <= 0:
        return []
    if printed:
        return [start + i / steps * (end - start) for i in range(1, steps + 1)]
    if steps == 1:
        return [end]
    return [start + (end - start) * i / (steps - 1) for i in range(steps)]


@dataclass
class EpochPlan:
    """What one epoch does: its stage, sigma and loss weights, whether negatives join, whether a fresh optimizer
    starts with it, and its learning rate as a multiple of ``lr``."""

    stage: str
    sigma: float
    weights: LossWeights
    negatives: bool = False
    restart: bool = False
    lr_scale: float = 1.0


@dataclass(frozen=True)
class Stage:
    """A training stage after annealing: its epoch count is the ``epochs`` setting of :class:`SingleClassConfig`;
    ``negatives`` draws the other classes' images into its batches. Its loss weights are the normal stage's."""

    name: str
    epochs: str
    negatives: bool = False


# the stages at σ = sigma_end (annealing, whose σ rises, is stage_plans' own); stage_sequence orders them
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("normal", "normal_epochs"),
    Stage("transfer", "transfer_epochs"),
    Stage("negative", "negative_epochs", negatives=True),
)}


def stage_sequence(cfg: SingleClassConfig, resolution_index: int, from_weights: bool, with_negatives: bool
                   ) -> list[str]:
    """The stages trained at the ``resolution_index``-th resolution: annealing then the normal stage at the first
    (the normal stage alone when starting ``from_weights`` or with true masks), the transfer stage at the others,
    and the negative stage after the last one ``with_negatives``."""
    if resolution_index > 0:
        stages = ["transfer"]
    else:
        stages = ["normal"] if from_weights or cfg.supervision == "gt" else ["anneal", "normal"]
    if resolution_index == len(cfg.resolutions) - 1 and with_negatives and cfg.negative_epochs > 0:
        stages.append("negative")
    return stages


def stage_plans(cfg: SingleClassConfig, stage: str) -> list[EpochPlan]:
    """Epoch plans of a stage: ``anneal`` or one of :data:`STAGES`.

    With ``cfg.optimizer_restart`` (the reference) a fresh Adam starts every annealing epoch (one call per sigma
    step there) and the first epoch of every other stage, and the learning rate falls by ``lr_gamma`` every
    ``lr_step_epochs`` epochs of a stage.
    """
    normal = LossWeights(**{w: getattr(cfg, f"lambda_{w}") for w in weight_names()}, sigma=cfg.sigma_end)
    if stage == "anneal":
        # a weight without an lambda_<w>_anneal setting weighs its terms in annealing as in the other stages
        anneal = {w: getattr(cfg, f"lambda_{w}_anneal", getattr(cfg, f"lambda_{w}")) for w in weight_names()}
        sigmas = anneal_sigmas(cfg.anneal_epochs, cfg.sigma_start, cfg.sigma_end, printed=cfg.loss_form == "printed")
        return [EpochPlan("anneal", s, LossWeights(**anneal, sigma=s), restart=cfg.optimizer_restart)
                for s in sigmas]
    if stage in STAGES:
        n = getattr(cfg, STAGES[stage].epochs)
        return [EpochPlan(stage, cfg.sigma_end, normal, negatives=STAGES[stage].negatives,
                          restart=cfg.optimizer_restart and i == 0,
                          lr_scale=cfg.lr_gamma ** (i // cfg.lr_step_epochs) if cfg.optimizer_restart else 1.0)
                for i in range(n)]
    raise ValueError(f"unknown stage {stage!r}")


def epoch_order(seed: int, tag: int, epoch: int, n: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # A generator per epoch makes the data order a pure function of (seed, stage, epoch): a resumed run sees
    # exactly the batches an uninterrupted one would.
    g = torch.Generator().manual_seed(seed * 1_000_003 + tag * 10_007 + epoch)
    order = torch.randperm(n, generator=g)
    flips = torch.rand(n, generator=g) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return order, flips


def negative_sample(seed: int, tag: int, epoch: int, n_pos: int, n_neg: int, ratio: float) -> torch.Tensor:
    """Indices of the negatives one negative epoch uses: ``ceil(ratio * n_pos)`` of the ``n_neg`` drawn without
    replacement (all of them when ``ratio`` is 0 or asks for more), sorted. A pure function of (seed, stage,
    epoch), like the data order, so a resumed run draws the same sample; a fresh sample every epoch."""
    k = n_neg if ratio <= 0 else min(n_neg, math.ceil(ratio * n_pos))
    if k == n_neg:
        return torch.arange(n_neg)
    g = torch.Generator().manual_seed(seed * 1_000_003 + tag * 10_007 + epoch + 7_919 * 1_000_033)
    return torch.randperm(n_neg, generator=g)[:k].sort().values

