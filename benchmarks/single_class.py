"""Single-class benchmark on real photographs (shared ECSSD and Weizmann Horse), the paper's Tables 2 and 3.

For each data set, at 128 px with the paper's full schedule (15 annealing + 50 normal epochs, Adam 1e-3,
batch 16), trains: reg from annealing; gt (cross-entropy on true masks); and reg whose normal stage starts
from the other data set's reg model (the paper's transfer idea). Prints the test-fold F-measure (beta^2 = 0.3,
pooled confusion matrix, argmax at 128 px) and wall time of each.

The default network is the one that meets the issue's three ECSSD targets together: frozen EfficientNet-Lite0
with every block's output fed to the decoder (``--encoder-features all_blocks``), the light decoder
(128, 64, 32, 16, 16) with one 3x3 convolution after the skip concatenations at strides 8, 4 and 2
(``--decoder-convs 0 1 1 1``). ``--encoder-features stage_ends --decoder-convs 0 0 1 1`` is the pipeline's
default network (``config.yaml``).

Resumable: a finished run is cached as JSON under --out and skipped; an interrupted one resumes from its
per-epoch checkpoint.

    python benchmarks/single_class.py [--data ../shared/data] [--out results/benchmarks/single_class]
        [--decoder light|smp] [--decoder-channels C1 .. C5] [--decoder-convs N | N16 N8 N4 N2] [--encoder-head]
        [--encoder-features stage_ends|all_blocks] [--encoder-batchnorm fixed|train] [--optimizer-restart]
        [--seed S] [--packaged]
        [--tensors DIR] [--only ecssd:gt ...]

``--photo-recipe`` trains each data set's train fold as ``rlseg train --config configs/photos.yaml`` does (the
packaged start, 128 -> 256 px) and scores the packaged start alone and the trained model on both folds at full size,
labelled as the preset makes pseudo labels (``pseudo_gt``: resolution, scales, flip): what a user's photos get. A
model trained before is scored again when only the labelling changed. Choose settings on the train fold.

``--packaged`` adds the packaged start (``base_model.source: packaged``) scored as it is and reg whose normal stage
starts from it, with the packaged start's U-Net (the pipeline's default).

``--tensors DIR`` keeps the decoded 128 px tensors of both data sets in DIR (lossless WebP, ~33 MB), so a
machine without the shared data, such as a lent GPU, can run the benchmark on exactly the same inputs.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from rlseg.checkpoint import load_weights
from rlseg.data import load_binary_masks, load_images
from rlseg.inference import load_model, object_probability, predict
from rlseg.io import write_text
from rlseg.metrics import ConfusionMatrix, f_measure, jaccard, per_image_f_measure
from rlseg.models import ALL_BLOCKS_ENCODERS, build_unet
from rlseg.packaged import materialise_start, packaged_start
from rlseg.schedule import single_class_settings
from rlseg.settings import defaults, one_folder_settings
from rlseg.train import SingleClassConfig, train_single_class

SPLITS = {
    "ecssd": (lambda s: s <= "0700", "images", "masks"),
    "weizmann_horse": (lambda s: s <= "horse228", "images", "masks"),
}
TARGETS = {"ecssd": {"gt": 0.84, "reg_anneal": 0.62, "reg_best": 0.70}}


def split(root: Path, name: str) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    is_train, img_dir, mask_dir = SPLITS[name]
    images = sorted((root / img_dir).glob("*.jpg"))
    masks = [root / mask_dir / f"{p.stem}.png" for p in images]
    train = [(i, m) for i, m in zip(images, masks, strict=True) if is_train(i.stem)]
    test = [(i, m) for i, m in zip(images, masks, strict=True) if not is_train(i.stem)]
    return [i for i, _ in train], [m for _, m in train], [i for i, _ in test], [m for _, m in test]


def _pack(images: torch.Tensor) -> dict[str, np.ndarray]:
    # Lossless WebP: a third of the raw size, so the cache of both data sets travels to a lent GPU machine.
    blobs = []
    for img in images.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "WEBP", lossless=True, quality=100, method=4)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    return {"webp": np.concatenate(blobs), "ends": np.cumsum([len(b) for b in blobs])}


def _unpack(webp: np.ndarray, ends: np.ndarray) -> torch.Tensor:
    starts = np.concatenate([[0], ends[:-1]])
    arrays = [np.asarray(Image.open(io.BytesIO(webp[a:b].tobytes())).convert("RGB"))
              for a, b in zip(starts, ends, strict=True)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def tensors(data: Path, name: str, res: int, cache: Path | None) -> dict[str, torch.Tensor]:
    """Train/test images and masks of one data set at ``res`` px, decoded once; kept in ``cache`` if given.

    The cache (an .npz of lossless WebP images and packed masks) lets a machine without the shared data, such
    as a lent GPU, run the benchmark on exactly the same tensors.
    """
    path = cache / f"{name}_{res}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            out = {}
            for part in ("train", "test"):
                out[f"{part}_images"] = _unpack(z[f"{part}_webp"], z[f"{part}_ends"])
                n = len(z[f"{part}_ends"])
                bits = np.unpackbits(z[f"{part}_masks"])[: n * res * res]
                out[f"{part}_masks"] = torch.from_numpy(bits.reshape(n, res, res).copy())
            return out
    tr_i, tr_m, te_i, te_m = split(data / name, name)
    out = {"train_images": load_images(tr_i, res, desc=name), "train_masks": load_binary_masks(tr_m, res),
           "test_images": load_images(te_i, res, desc=f"{name} test"), "test_masks": load_binary_masks(te_m, res)}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for part in ("train", "test"):
            packed = _pack(out[f"{part}_images"])
            arrays.update({f"{part}_webp": packed["webp"], f"{part}_ends": packed["ends"],
                           f"{part}_masks": np.packbits(out[f"{part}_masks"].numpy().ravel())})
        np.savez(path, **arrays)
        back = tensors(data, name, res, cache)
        if any(not torch.equal(v, back[k]) for k, v in out.items()):
            raise RuntimeError(f"{path}: the cache does not read back the same tensors")
    return out


def score(model_path: str, images: torch.Tensor, masks: torch.Tensor) -> dict:
    blob = load_weights(model_path)
    model = build_unet(blob["arch"], pretrained=False)
    model.load_state_dict(blob["state_dict"])
    pred = (predict(model, images) > 0.5).to(torch.uint8)
    cm = ConfusionMatrix(2)
    cm.update(masks, pred)
    return {"f_measure": f_measure(cm.matrix), "jaccard": jaccard(cm.matrix),
            "f_measure_per_image": per_image_f_measure(list(masks.numpy()), list(pred.numpy()))}


def run(name: str, kind: str, data: Path, out: Path, cfg: SingleClassConfig, init: str | None, device: str,
        only: list[str] | None = None, tensor_cache: Path | None = None) -> dict | None:
    cache = out / f"{name}_{kind}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    if only is not None and f"{name}:{kind}" not in only:
        return None
    t = tensors(data, name, cfg.resolutions[0], tensor_cache)
    t0 = time.time()
    result = train_single_class(cfg, lambda r: (t["train_images"], None, t["train_masks"]), out / f"{name}_{kind}",
                                init_weights=init, device=device)
    wall = time.time() - t0
    scores = score(result["final"], t["test_images"], t["test_masks"])
    row = {"data": name, "run": kind, **scores, "train_f_measure": result["history"][-1].get("f_measure"),
           "wall_s": round(wall, 1), "model": result["final"], "epochs": len(result["history"])}
    write_text(cache, json.dumps(row, indent=2) + "\n")
    return row


def packaged_runs(names: list[str], args: argparse.Namespace, schedule: dict) -> list[dict | None]:
    """The packaged start alone on each test fold, and reg from it (the paper's Pet start, Table 2's transfer)."""
    start = args.out / "packaged_start.pt"
    materialise_start(defaults("single_class"), start, args.out / "packaged_start_history.csv")
    cfg = SingleClassConfig(**{**schedule, **packaged_start(args.encoder)["arch"]})
    rows: list[dict | None] = []
    for n in names:
        t = tensors(args.data, n, 128, args.tensors)
        rows.append({"data": n, "run": "packaged_alone", **score(str(start), t["test_images"], t["test_masks"]),
                     "wall_s": 0.0})
        rows.append(run(n, "reg_packaged", args.data, args.out, cfg, str(start), args.device, args.only,
                        args.tensors))
    return rows


def score_full_size(model_path: str, images: list[Path], masks: list[Path], labelling: dict) -> dict:
    """F-measure and Jaccard at each photo's own size, the model run as pseudo labels are made (``labelling``: the
    preset's ``pseudo_gt`` resolution, scales and flip)."""
    model = load_model(model_path, torch.device("cpu"))
    cm = ConfusionMatrix(2)
    for i in range(0, len(images), 16):
        batch = [Image.open(p).convert("RGB") for p in images[i : i + 16]]
        probs = object_probability(model, batch, torch.device("cpu"), labelling["resolution"], labelling["scales"],
                                   labelling["flip"])
        for mask, prob in zip(masks[i : i + 16], probs, strict=True):
            cm.update((np.asarray(Image.open(mask).convert("L")) > 127).astype(np.uint8), (prob > 0.5).astype(np.uint8))
    return {"f_measure": f_measure(cm.matrix), "jaccard": jaccard(cm.matrix)}


def labelling_tag(labelling: dict) -> str:
    """How the labels were made, for a cache name: ``at384``, ``at384_x0.75-1.0-1.25_flip``."""
    tag = f"at{labelling['resolution']}"
    if list(labelling["scales"]) != [1.0]:
        tag += "_x" + "-".join(str(float(x)) for x in labelling["scales"])
    return tag + ("_flip" if labelling["flip"] else "")


def photo_recipe_runs(names: list[str], args: argparse.Namespace) -> list[dict]:
    """Each train fold through the photo preset's single-class training (``rlseg train --config`` the preset: the
    schema's defaults, then the preset's ``single_class``), scored on both folds at full size."""
    preset = yaml.safe_load(args.photo_recipe.read_text())
    # as rlseg train sets it for one folder without --negatives
    cfg, _ = single_class_settings(one_folder_settings({**defaults("single_class"), **preset.get("single_class", {}),
                                                        "seed": args.seed}))
    labelling = {**defaults("pseudo_gt"), **preset.get("pseudo_gt", {})}
    labelling["resolution"] = labelling["resolution"] or cfg.resolutions[-1]
    tag = labelling_tag(labelling)
    start = args.out / "packaged_start.pt"
    materialise_start(defaults("single_class"), start, args.out / "packaged_start_history.csv")
    rows = []
    for n in (n for n in names if args.only is None or f"{n}:photo_recipe" in args.only):
        tr_i, tr_m, te_i, te_m = split(args.data / n, n)
        for kind, train in (("packaged_alone", False), (f"reg_photo_recipe_seed{args.seed}", True)):
            cache = args.out / f"{n}_{kind}_{tag}.json"
            if not cache.is_file():
                t0 = time.time()
                path = str(start)
                trained = args.out / f"{n}_{kind}" / f"model_{cfg.resolutions[-1]}.pt"
                if train and trained.is_file():  # trained before, labelled another way: scored again, not retrained
                    path = str(trained)
                elif train:
                    images = {r: load_images(tr_i, r, desc=n) for r in cfg.resolutions}
                    path = train_single_class(cfg, lambda r, imgs=images: (imgs[r], None, None),
                                              args.out / f"{n}_{kind}", init_weights=str(start),
                                              device=args.device)["final"]
                test = score_full_size(path, te_i, te_m, labelling)
                on_train = score_full_size(path, tr_i, tr_m, labelling)
                row = {"data": n, "run": f"{kind}_{tag}", **test, "f_measure_per_image": float("nan"),
                       "train_f_measure": on_train["f_measure"], "train_jaccard": on_train["jaccard"],
                       "wall_s": round(time.time() - t0, 1), "model": path}
                write_text(cache, json.dumps(row, indent=2) + "\n")
            rows.append(json.loads(cache.read_text()))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/single_class"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--encoder", default="tu-tf_efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decoder-channels", type=int, nargs=5, default=[128, 64, 32, 16, 16],
                    help="light decoder widths; the reference's UMobV2 uses 512 256 128 64 64")
    ap.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order")
    ap.add_argument("--decoder", default="light", choices=["light", "smp"])
    ap.add_argument("--decoder-convs", type=int, nargs="+", default=None,
                    help="3x3 convolutions after each skip concatenation of the light decoder (one number, "
                         "or four: strides 16, 8, 4, 2); default 0 1 1 1 (0 with --decoder smp)")
    ap.add_argument("--encoder-head", action="store_true",
                    help="give the offline encoder its last 1x1 convolution (1280 channels), as UMobV2 has")
    ap.add_argument("--encoder-features", default=None, choices=["stage_ends", "all_blocks"],
                    help="all_blocks: every encoder block's output concatenated per stride, as the reference's "
                         "UMobV2; default all_blocks where the encoder has it and --encoder-head is off")
    ap.add_argument("--encoder-batchnorm", default="fixed", choices=["fixed", "train"],
                    help="train: the frozen encoder's BatchNorm uses batch statistics in training, as the reference's")
    ap.add_argument("--optimizer-restart", action="store_true",
                    help="a fresh Adam per annealing epoch and per stage, as the reference's training loop")
    ap.add_argument("--tensors", type=Path, default=None,
                    help="folder of decoded 128 px tensors (made on first use); lets the run go without --data")
    ap.add_argument("--only", nargs="*", default=None,
                    help="run only these, e.g. ecssd:gt ecssd:reg_anneal ecssd:photo_recipe")
    ap.add_argument("--packaged", action="store_true",
                    help="also the packaged start (base_model.source: packaged) scored as it is, and reg whose "
                         "normal stage starts from it, with the pipeline's U-Net (the packaged start's)")
    ap.add_argument("--photo-recipe", type=Path, nargs="?", const=Path(__file__).resolve().parents[1] / "configs" /
                    "photos.yaml", default=None, help="also train each train fold with this preset's single-class "
                    "settings (default configs/photos.yaml) and label as its pseudo_gt says, scored at full size")
    args = ap.parse_args()
    if args.decoder_convs is None:
        args.decoder_convs = [0, 1, 1, 1] if args.decoder == "light" else [0]
    if args.encoder_features is None:
        has_all_blocks = args.encoder in ALL_BLOCKS_ENCODERS and not args.encoder_head
        args.encoder_features = "all_blocks" if has_all_blocks else "stage_ends"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    base = {"encoder": args.encoder, "resolutions": [128], "anneal_epochs": 15, "normal_epochs": 50,
            "decoder_channels": list(args.decoder_channels), "decoder": args.decoder,
            "encoder_head": args.encoder_head, "encoder_features": args.encoder_features, "seed": args.seed,
            "encoder_batchnorm": args.encoder_batchnorm, "optimizer_restart": args.optimizer_restart,
            "decoder_convs": args.decoder_convs[0] if len(args.decoder_convs) == 1 else args.decoder_convs}
    reg = SingleClassConfig(**base)
    gt = SingleClassConfig(**base, supervision="gt")
    rows = []
    names = [n for n in ("weizmann_horse", "ecssd") if (args.data / n / "images").is_dir()
             or (args.tensors and (args.tensors / f"{n}_128.npz").is_file())]
    if not names:
        raise SystemExit(f"no shared data under {args.data}")
    for n in names:
        rows.append(run(n, "reg_anneal", args.data, args.out, reg, None, args.device, args.only, args.tensors))
    for n in names:
        rows.append(run(n, "gt", args.data, args.out, gt, None, args.device, args.only, args.tensors))
    for n in names:
        others = [r for r in rows if r and r["run"] == "reg_anneal" and r["data"] != n]
        if others:
            rows.append(run(n, f"reg_transfer_from_{others[0]['data']}", args.data, args.out, reg,
                            others[0]["model"], args.device, args.only, args.tensors))
    if args.packaged:
        rows += packaged_runs(names, args, base)
    if args.photo_recipe:
        rows += photo_recipe_runs(names, args)
    rows = [r for r in rows if r]
    print("\n| data | run | F-measure (test) | F per image | Jaccard | wall s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['data']} | {r['run']} | {r['f_measure']:.4f} | {r['f_measure_per_image']:.4f} | "
              f"{r['jaccard']:.4f} | {r['wall_s']} |")
    for n, t in TARGETS.items():
        got = {r["run"]: r["f_measure"] for r in rows if r["data"] == n}
        if got:
            best = max((v for k, v in got.items() if k.startswith("reg")), default=float("nan"))
            print(f"{n}: gt {got.get('gt', float('nan')):.4f} (target {t['gt']}), reg from annealing "
                  f"{got.get('reg_anneal', float('nan')):.4f} (target {t['reg_anneal']}), best reg {best:.4f} "
                  f"(target {t['reg_best']})")


if __name__ == "__main__":
    main()
