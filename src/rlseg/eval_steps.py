"""The workflow's evaluation steps: the evaluation set's index, the multi-class network's predictions of it, and
the (image, true mask) pairs of the training images where a source has true masks (the upper bound)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from rlseg.imageio import load_image
from rlseg.ingest import used_paths
from rlseg.io import child_path, read_csv, save_png, write_csv
from rlseg.sources import get_source
from rlseg.voc import check_samples, download_voc2012, eval_voc_root, label_count, read_voc_dir, voc_palette

log = logging.getLogger("rlseg")

__all__ = ["predict_eval_set", "resolve_eval_set", "true_mask_pairs"]


def resolve_eval_set(settings: dict, results: str, index_out: str, classes: Sequence[str]) -> None:
    """Write the evaluation index (id, image, mask) for the configured evaluation source, after checking every
    sample (:func:`rlseg.voc.check_samples`: readable, labels of ``classes`` or 255, mask and image of one size)."""
    source = settings["source"]
    if source == "synthetic":
        root = Path(results) / "world" / "eval"
    elif source == "voc2012":
        root = download_voc2012(eval_voc_root(settings, results), settings["split"])
    else:
        root = Path(settings["root"])
    samples = read_voc_dir(root, settings["split"])
    check_samples(samples, label_count(list(classes)))
    write_csv(index_out, [{"id": s.image_id, "image": str(s.image), "mask": str(s.mask)} for s in samples],
              ["id", "image", "mask"])
    log.info("evaluation set %s: %d images from %s -> %s", source, len(samples), root, index_out)


def predict_eval_set(model_path: str, index: str, pairs_out: str, outdir: str | Path, device: str = "auto",
                     scales: Sequence[float] = (1.0,), flip: bool = False) -> None:
    """Predict every evaluation image with the multi-class network (at ``scales``, with its mirror image too with
    ``flip``: :func:`rlseg.multiclass.predict_full`); PNGs (label ids) under ``outdir``."""
    # torch: the index and pairs steps start without it, and the job's setup_job runs before it loads
    from rlseg.inference import load_model, segment
    from rlseg.runtime import resolve_device

    dev = resolve_device(device)
    model = load_model(model_path, dev)
    pal = voc_palette()
    rows = []
    for r in tqdm(read_csv(index), desc="predict", mininterval=5):
        pred = segment(model, [load_image(r["image"], min_side=1)], dev, scales=scales, flip=flip)[0]
        out = child_path(outdir, r["id"], ".png")
        save_png(out, pred, palette=pal)
        rows.append({"id": r["id"], "mask": r["mask"], "prediction": str(out)})
    write_csv(pairs_out, rows, ["id", "mask", "prediction"])
    log.info("predicted %d images -> %s", len(rows), outdir)


def true_mask_pairs(source: str, inputs: Sequence[str], results: str, pairs_out: str) -> None:
    """(image, true mask) pairs of the used training images, where true masks exist."""
    true_mask = get_source(source).true_mask
    if true_mask is None:
        raise ValueError(f"images.source {source!r} has no true masks (no upper bound)")
    rows = []
    manifests = [f for f in inputs if f.endswith("manifest.csv")]
    for m in manifests:
        cls = Path(m).parent.name
        for p in used_paths(m):
            mask = true_mask(p, cls, Path(results))
            if mask is not None and Path(mask).is_file():
                rows.append({"image": p, "label": str(mask)})
    if not rows:
        raise FileNotFoundError(f"no true masks found for the training images of source {source!r}")
    write_csv(pairs_out, rows, ["image", "label"])
    log.info("true masks: %d pairs -> %s", len(rows), pairs_out)
