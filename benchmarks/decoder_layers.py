"""The U-Net decoder's faster CPU forms against PyTorch's modules, interleaved in one process.

Three figures, each from runs that alternate between the two forms, so that the machine's load moves both alike
(1 and 2 per resolution, medians over repetitions in one process):

1. the last up block (ConvTranspose2d 2x2/2 + BatchNorm + ReLU, 16 channels) and the 3x3 head, forward and backward
   on a batch: the modules one after the other, against ``rlseg.models.cpu_kernels.up_head``;
2. one training step on cached encoder features (decoder, the normal stage's loss, backward, Adam) of the default
   U-Net: the decoder as module calls on concatenated skips (``single_class.cpu_kernels: false``, the benchmark
   baseline's form) with PyTorch's default Adam, against the decoder as the pipeline runs it with fused Adam;
3. the training loop itself (``rlseg.train.fit`` on the first 160 ECSSD images, or synthetic ones without the
   shared data): seconds an epoch once the feature cache is full (the median of the last four of 12), the decoder
   as module calls against the decoder as the pipeline runs it, in alternating runs. There every step reads other
   cached features from a larger working set, and the gain is smaller than in 2.

``benchmarks/throughput.py`` compares the whole loop with the reference's.

    python benchmarks/decoder_layers.py [--resolutions 128 256] [--batch 16] [--threads 2] [--repeats 20]
        [--loop-resolutions 128] [--loop-runs 3] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from throughput import emit, first_epochs, image_paths  # this script's sibling

from rlseg.data import load_images
from rlseg.models import build_unet
from rlseg.models.cpu_kernels import ShiftSumConv2d, up_head
from rlseg.models.light_decoder import up_block
from rlseg.pipeline import setup_job
from rlseg.train import SingleClassConfig, fit, stage_plans


def interleaved(fns: dict[str, Callable[[], None]], repeats: int, warm: int = 3) -> dict[str, float]:
    """Median milliseconds of each function, the functions called in turn ``warm + repeats`` times."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warm + repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warm:
                times[name].append(1e3 * (time.perf_counter() - t0))
    return {k: float(np.median(v)) for k, v in times.items()}


def last_block(size: int, batch: int, repeats: int) -> dict[str, float]:
    """Forward and backward of the last up block and the head: the modules, and ``up_head``."""
    torch.manual_seed(0)
    up, head = up_block(16, 16), ShiftSumConv2d(16, 2)
    x = torch.randn(batch, 16, size // 2, size // 2, requires_grad=True)
    grad = torch.randn(batch, 2, size, size)
    return interleaved({"modules": lambda: head(up(x)).backward(grad),
                        "up_head": lambda: up_head(x, up, head).backward(grad)}, repeats)


def training_step(size: int, batch: int, repeats: int) -> dict[str, float]:
    """One training step on cached features: the decoder as module calls with PyTorch's default Adam, and the
    decoder as the pipeline runs it with fused Adam (the same initial weights)."""
    cfg = SingleClassConfig(resolutions=[size])
    loss_fn = cfg.loss(stage_plans(cfg, "normal")[0].weights)
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size)
    fast = build_unet(cfg.arch).train()
    with torch.no_grad():
        feats = fast.features(x)
    modules = build_unet(cfg.arch, cpu_kernels=False).train()  # the plain decoder, the same weights
    modules.load_state_dict(fast.state_dict())

    def step_of(model: torch.nn.Module, fused: bool) -> Callable[[], None]:
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, fused=fused)

        def step() -> None:
            total, _ = loss_fn(model.decode(feats), x, None)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
        return step

    return interleaved({"modules": step_of(modules, False), "pipeline": step_of(fast, True)}, repeats)


def loop_epochs(images: torch.Tensor, size: int, module_layers: bool, epochs: int = 12) -> float:
    """Median seconds of the last four of ``epochs`` epochs of ``fit`` (annealing from the start)."""
    cfg = SingleClassConfig(resolutions=[size])
    torch.manual_seed(0)
    model = build_unet(cfg.arch, cpu_kernels=not module_layers)
    with tempfile.TemporaryDirectory() as tmp:
        rows = fit(model, images, first_epochs(cfg, epochs), cfg, Path(tmp) / "ckpt.pt", {"size": size},
                   device=torch.device("cpu"))
    return float(np.median([r["seconds"] for r in rows[-4:]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--loop-resolutions", type=int, nargs="*", default=[128], help="none: skip the loop's figure")
    ap.add_argument("--loop-runs", type=int, default=3, help="alternating runs of each form")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    setup_job(args.threads, "fp32")
    for size in args.resolutions:
        where = {"px": size, "batch": args.batch, "threads": args.threads, "repeats": args.repeats}
        block = last_block(size, args.batch, args.repeats)
        emit("last_block_ms_modules", block["modules"], **where)
        emit("last_block_ms_up_head", block["up_head"], **where)
        emit("last_block_speedup", block["modules"] / block["up_head"], **where)
        step = training_step(size, args.batch, max(args.repeats // 2, 1))
        emit("training_step_ms_modules", step["modules"], **where)
        emit("training_step_ms_pipeline", step["pipeline"], **where)
        emit("training_step_speedup", step["modules"] / step["pipeline"], **where)
    paths = image_paths(args.data, 160) if args.loop_resolutions else []
    for size in args.loop_resolutions:
        images = load_images(paths, size)
        runs: dict[str, list[float]] = {"modules": [], "pipeline": []}
        for _ in range(args.loop_runs):
            for name in runs:
                runs[name].append(loop_epochs(images, size, module_layers=name == "modules"))
        where = {"px": size, "images": len(paths), "runs": args.loop_runs, "threads": args.threads}
        means = {k: float(np.mean(v)) for k, v in runs.items()}
        for name, v in runs.items():
            emit(f"loop_epoch_s_{name}", means[name], each=[round(t, 3) for t in v], **where)
        emit("loop_speedup", means["modules"] / means["pipeline"], **where)


if __name__ == "__main__":
    main()
