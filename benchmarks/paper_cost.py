"""The paper's run (``configs/paper.yaml``), costed from images/s measured here, stage by stage.

Each stage's network is built as the paper's config builds it (UMobV2 at 128 and 256 px; DeepLabV3-ResNet101 at
513 crops) without downloading weights (the cost does not depend on them), and timed through the same code the
workflow runs (``rlseg.train.fit``, the multi-class step, ``rlseg.multiclass.predict_full``) on random inputs, on
this machine's device (CUDA when present). The image-steps of each stage come from the config: classes, images per
class, epochs per stage, negatives drawn per negative epoch, the base model's Oxford-IIIT Pet trainval (3,680
images) and VOC 2012 val (1,449). Prints one JSON line per figure: per stage the FLOPs of one image-step, the
measured images/s, the projected hours here; then on one GPU, from the same FLOPs at ``--gpu-tflops`` effective
(an estimate unless this runs on that GPU, when its own measurement is used); and the wall time on N SLURM nodes,
where the classes' jobs run side by side.

    python benchmarks/paper_cost.py [--config configs/paper.yaml] [--threads 2] [--gpu-tflops 100] [--nodes 1 4 20]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from rlseg.config import load_config
from rlseg.models import build_multiclass, build_unet
from rlseg.multiclass import predict_full
from rlseg.runtime import autocast, resolve_device
from rlseg.train import SingleClassConfig, fit, stage_plans

REPO = Path(__file__).resolve().parents[1]
OXFORD_PET_TRAINVAL = 3680
VOC_VAL = 1449
VOC_SIZE = (500, 375)  # a typical VOC photo (width, height)


def emit(figure: str, value: float, **extra) -> None:
    print(json.dumps({"figure": figure, "value": round(value, 4), **extra}), flush=True)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def calls_per_s(fn, dev: torch.device, n: int, warm_up: bool = True) -> float:
    """Calls of ``fn`` per second over ``n`` calls, after one to warm up unless the caller has."""
    if warm_up:
        fn()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(dev)
    return n / (time.perf_counter() - t0)


def single_class_rate(cfg: SingleClassConfig, size: int, dev: torch.device, images: int, epochs: int
                      ) -> tuple[float, float]:
    """(images/s, FLOPs per image-step) of single-class training at ``size`` px through ``fit``."""
    model = build_unet(cfg.arch, pretrained=False)
    x = (torch.rand(images, 3, size, size) * 255).to(torch.uint8)
    plans = stage_plans(cfg, "normal")[: epochs + 1]
    with tempfile.TemporaryDirectory() as tmp:
        rows = fit(model, x, plans, cfg, Path(tmp) / "c.pt", {"size": size}, device=dev, on_epoch=None)
    seconds = sum(r["seconds"] for r in rows[1:])  # the first epoch warms up (kernels, a cache if any)
    model.train()
    # a step's FLOPs grow with the batch linearly: two images give the per-image figure of a batch of 16 (to 0.3 %)
    xb = torch.rand(2, 3, size, size, device=dev)
    with FlopCounterMode(display=False) as counter:
        total, _ = cfg.loss(plans[0].weights)(model(xb), xb, None)
        total.backward()
    return images * (len(rows) - 1) / seconds, counter.get_total_flops() / len(xb)


def multiclass_rate(mc: dict, num_classes: int, dev: torch.device, batch: int, steps: int) -> tuple[float, float]:
    """(images/s, FLOPs per image-step) of a multi-class SGD step on ``mc['crop']`` crops."""
    model = build_multiclass({"arch": mc["arch"], "encoder": mc["encoder"], "num_classes": num_classes},
                             pretrained=False).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=mc["lr"], momentum=mc["momentum"])
    x = torch.rand(batch, 3, mc["crop"], mc["crop"], device=dev)
    y = torch.randint(0, num_classes, (batch, mc["crop"], mc["crop"]), device=dev)

    def step() -> None:
        with autocast(dev):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:  # also the warm-up step
        step()
    return batch * calls_per_s(step, dev, steps, warm_up=False), counter.get_total_flops() / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "paper.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: the config's device, auto)")
    ap.add_argument("--images", type=int, default=32, help="images per single-class timing")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per single-class timing")
    ap.add_argument("--multiclass-batch", type=int, default=2)
    ap.add_argument("--multiclass-steps", type=int, default=2)
    ap.add_argument("--label-batch", type=int, default=32, help="images per timed pseudo-label batch")
    ap.add_argument("--calls", type=int, default=2, help="timed calls of each inference timing, after a warm-up")
    ap.add_argument("--multiclass-crop", type=int, default=None,
                    help="crop side of the multi-class timing (default: the config's multiclass.crop)")
    ap.add_argument("--gpu-tflops", type=float, default=100.0,
                    help="effective TFLOP/s assumed for one modern GPU where none is measured (bf16: about a third "
                         "of an A100's dense peak, a tenth of an H100's)")
    ap.add_argument("--gpu-unet-images-per-s", type=float, default=1000.0,
                    help="the single-class U-Net's training rate at 256 px assumed where no GPU is measured")
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 4, 20])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    dev = resolve_device(args.device or cfg["device"])
    sc, mc = cfg["single_class"], cfg["multiclass"]
    if args.multiclass_crop is not None:
        mc = {**mc, "crop": args.multiclass_crop}
    settings = {k: v for k, v in sc.items() if k not in ("init", "negatives")}
    scfg = SingleClassConfig.from_dict(settings)
    classes = len(cfg["classes"])
    per_class = cfg["web"]["max_images"] if cfg["images"]["source"] == "web" else 250
    ratio = sc["negative_ratio"]
    neg_per_epoch = per_class * ratio if ratio > 0 else per_class * (classes - 1)
    lo, hi = sc["resolutions"][0], sc["resolutions"][-1]
    # image-steps per job and resolution, as rlseg.train.train_single_class runs the stages
    base_steps = {lo: OXFORD_PET_TRAINVAL * (sc["anneal_epochs"] + sc["normal_epochs"]),
                  hi: OXFORD_PET_TRAINVAL * sc["transfer_epochs"]}
    class_steps = {lo: per_class * sc["normal_epochs"],
                   hi: per_class * sc["transfer_epochs"] + (per_class + neg_per_epoch) * sc["negative_epochs"]}
    emit("paper_counts", 0, classes=classes, images_per_class=per_class, negatives_per_negative_epoch=neg_per_epoch,
         base_image_steps=base_steps, class_image_steps=class_steps, device=str(dev), threads=args.threads)
    rates, flops = {}, {}
    for size in sorted({lo, hi}):
        rates[size], flops[size] = single_class_rate(scfg, size, dev, args.images, args.epochs)
        emit(f"single_class_images_per_s_{size}px", rates[size], flops_per_image=flops[size], device=str(dev))
    mc_rate, mc_flops = multiclass_rate(mc, classes + 1, dev, args.multiclass_batch, args.multiclass_steps)
    emit("multiclass_images_per_s", mc_rate, flops_per_image=mc_flops, crop=mc["crop"], arch=mc["arch"],
         device=str(dev))
    unet = build_unet(scfg.arch, pretrained=False).to(dev).eval()
    xb = torch.rand(args.label_batch, 3, hi, hi, device=dev)

    def label_batch() -> None:
        with torch.inference_mode(), autocast(dev):
            unet(xb)

    pgt_rate = args.label_batch * calls_per_s(label_batch, dev, args.calls)
    deeplab = build_multiclass({"arch": mc["arch"], "encoder": mc["encoder"], "num_classes": classes + 1},
                               pretrained=False).to(dev).eval()
    photo = Image.new("RGB", VOC_SIZE)
    pred_rate = calls_per_s(lambda: predict_full(deeplab, photo, dev), dev, args.calls)
    emit("pseudo_gt_images_per_s", pgt_rate, px=hi, device=str(dev))
    emit("predict_images_per_s", pred_rate, size=list(VOC_SIZE), device=str(dev))

    def hours(steps_by_size: dict[int, int], rate_of) -> float:
        return sum(n / rate_of(s) for s, n in steps_by_size.items()) / 3600

    mc_steps = classes * per_class * mc["epochs"]

    def stage_hours(rate_of_sc, rate_mc, rate_pgt, rate_pred) -> dict[str, float]:
        return {"base_model": hours(base_steps, rate_of_sc), "single_class_per_class": hours(class_steps, rate_of_sc),
                "pseudo_gt": classes * per_class / rate_pgt / 3600, "multiclass": mc_steps / rate_mc / 3600,
                "predict": VOC_VAL / rate_pred / 3600}

    here = stage_hours(rates.get, mc_rate, pgt_rate, pred_rate)
    gpu_flops = args.gpu_tflops * 1e12
    if dev.type == "cuda":
        gpu, gpu_source = here, f"measured on {torch.cuda.get_device_name(dev)}"
    else:
        # FLOPs of an inference image: a third of a training step's (forward only). A small U-Net does not keep a
        # GPU busy: its rate is also capped at --gpu-unet-images-per-s (at 256 px; four times that at 128 px)
        def unet_rate(size: int) -> float:
            return min(gpu_flops / flops[size], args.gpu_unet_images_per_s * (256 / size) ** 2)

        gpu = stage_hours(unet_rate, gpu_flops / mc_flops, 3 * unet_rate(hi),
                          gpu_flops / (mc_flops / 3 * (VOC_SIZE[0] * VOC_SIZE[1]) / mc["crop"] ** 2))
        gpu_source = (f"estimated: FLOPs at {args.gpu_tflops:g} effective TFLOP/s, U-Net training at most "
                      f"{args.gpu_unet_images_per_s:g} images/s at 256 px")
    for name, table in (("here", here), ("one_gpu", gpu)):
        for stage, h in table.items():
            emit(f"hours_{name}_{stage}", h, device=str(dev) if name == "here" else gpu_source)
        total = table["base_model"] + classes * table["single_class_per_class"] + table["pseudo_gt"] + \
            table["multiclass"] + table["predict"]
        largest = max(("base_model", table["base_model"]), ("single_class", classes * table["single_class_per_class"]),
                      ("multiclass", table["multiclass"]), key=lambda kv: kv[1])
        emit(f"hours_{name}_total", total, largest_stage=largest[0], target_one_gpu=24 if name == "one_gpu" else None)
        for n in args.nodes:
            # the classes' jobs side by side, one per node; the other stages are one job each
            wall = table["base_model"] + math.ceil(classes / n) * table["single_class_per_class"] + \
                table["pseudo_gt"] / min(n, classes) + table["multiclass"] + table["predict"]
            emit(f"hours_{name}_wall_{n}_nodes", wall)


if __name__ == "__main__":
    main()
