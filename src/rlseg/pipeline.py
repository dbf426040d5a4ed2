"""The workflow's steps as plain functions: each Snakemake script maps ``snakemake.*`` onto one of these."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from rlseg.cpu_slots import hold_cpu_slots, machine_cpus
from rlseg.imageio import BadImageError, last_image_pixels, load_image, pixel_batches
from rlseg.ingest import (
    check_files,
    finalize_manifests,
    folder_images,
    negative_paths,
    read_image_list,
    read_manifest,
    read_pairs,
    used_paths,
    write_manifest,
)
from rlseg.io import (
    CheckpointMismatch,
    EncoderWeightsUnavailable,
    InputError,
    NetworkUnavailable,
    UnsafeNameError,
    atomic_path,
    child_path,
    save_png,
    unique_stems,
    write_csv,
)
from rlseg.settings import ConfigError, base_model_settings
from rlseg.sources import get_source
from rlseg.voc import voc_palette

if TYPE_CHECKING:  # torch: the seconds-long jobs never load it
    from rlseg.cam import CamFilter

# torch and the training code are imported by the steps that use them: the seconds-long jobs (ingest, manifests,
# evaluation, figures) then start without torch's import, which would be most of their time

log = logging.getLogger("rlseg")

# what a user's mistake (a setting, a file, an image, a folder) or the machine's lack of a network raises: one line
# naming it, never a traceback
USER_ERRORS = (ConfigError, InputError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               CheckpointMismatch, BadImageError, UnsafeNameError, EncoderWeightsUnavailable, NetworkUnavailable)

__all__ = [
    "USER_ERRORS",
    "ingest_class",
    "logged",
    "make_pseudo_gt",
    "run_single_class",
    "setup_job",
]


@contextmanager
def logged(log_path: str | os.PathLike | None, what: str):
    """Log to ``log_path`` (and stderr) for the duration of a step; ends with what was done and how long it took."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)
    t0 = time.time()
    job = os.environ.get("SLURM_JOB_ID")
    log.info("%s: started%s", what, f" (SLURM job {job})" if job else "")
    try:
        yield log
    except Exception as err:
        log.error("%s: failed: %s", what, err)
        if isinstance(err, USER_ERRORS):
            # the message names the file and the problem: the job fails (status 1), what is done stays
            raise SystemExit(1) from None
        raise
    log.info("%s: done in %.1f s", what, time.time() - t0)


def setup_job(threads: int | None = None, precision: str = "auto", share_cpus: bool = False) -> None:
    """A job's run-time settings: OpenMP threads that sleep while they wait, its torch threads (None: torch's
    choice), its precision (``rlseg.runtime.set_precision``) and freed memory kept for reuse
    (``rlseg.runtime.reuse_freed_memory``); with ``share_cpus``, first a CPU slot per thread, held until the
    process ends (:func:`rlseg.cpu_slots.hold_cpu_slots`: waits while other jobs hold the machine's CPUs)."""
    if "torch" not in sys.modules:
        # jobs share the machine's cores: a spinning OpenMP thread takes a core another job's thread needs
        # (docs/performance.md). OpenMP reads this when torch loads.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    else:
        log.debug("torch was imported before setup_job: OMP_WAIT_POLICY stays %s", os.environ.get("OMP_WAIT_POLICY"))
    # torch loads here, after its OpenMP policy is set, and never in the seconds-long jobs
    import torch

    from rlseg.runtime import reuse_freed_memory, set_precision

    if threads is not None:
        # more threads than CPUs only adds contention (snakemake --cores 8 on a 2-core laptop)
        torch.set_num_threads(max(1, min(int(threads), machine_cpus())))
    if share_cpus:
        hold_cpu_slots(threads or torch.get_num_threads())
    set_precision(precision)
    reuse_freed_memory()


def ingest_class(cls: str, images: dict, web: dict, results: str, candidates: str) -> None:
    """Collect and check the class's images from the configured source (:mod:`rlseg.sources`) and write its
    candidate list."""
    rows = get_source(images["source"]).candidates(cls, images, web, Path(results))
    write_manifest(candidates, rows)
    used = sum(r["status"] == "used" for r in rows)
    log.info("class %s: %d usable, %d skipped -> %s", cls, used, len(rows) - used, candidates)


def finalize(candidate_files: Sequence[str], manifest_files: Sequence[str], classes: Sequence[str],
             near_duplicate_bits: int, min_images: int, shared: str = "drop") -> None:
    """Write every class's manifest from the candidates: near-duplicates dropped (under two classes: ``shared``),
    too-small classes refused."""
    candidates = {c: read_manifest(f) for c, f in zip(classes, candidate_files, strict=True)}
    manifests = finalize_manifests(candidates, near_duplicate_bits, min_images, shared)
    for c, f in zip(classes, manifest_files, strict=True):
        write_manifest(f, manifests[c])
        log.info("class %s: %d images used -> %s", c, sum(r["status"] == "used" for r in manifests[c]), f)


def run_single_class(
    cls: str,
    manifest: str,
    all_manifests: Sequence[str],
    classes: Sequence[str],
    ids: dict[str, int],
    settings: dict,
    outdir: str,
    model_out: str,
    history_out: str,
    base: str | None = None,
    negatives_dir: str | None = None,
    masks_dir: str | None = None,
    device: str = "auto",
    near_duplicate_bits: int = 4,
    labelling: dict | None = None,
    score_paths: Sequence[str] = (),
    top_classes: int = 3,
) -> dict:
    """Train one class's U-Net through its stages; negatives are the other classes' images that are not (near-)
    duplicates of the class's own (:func:`rlseg.ingest.negative_paths`), and a negatives folder where the source
    has one. True masks, where they exist, are read for monitoring only. ``labelling`` (:func:`rlseg.settings.
    labelling_of`: how the run makes its pseudo labels) is recorded in the model, for ``rlseg predict``.
    ``score_paths``, ``top_classes``: for ``center: imagenet`` (:func:`rlseg.cam.class_centre_points`)."""
    # torch and the training code: the job's setup_job runs first, and the seconds-long jobs never load them
    import torch

    from rlseg.checkpoint import add_meta
    from rlseg.data import load_images, load_label_masks
    from rlseg.schedule import single_class_settings
    from rlseg.train import train_single_class

    cfg, use_negatives = single_class_settings(settings)
    paths = used_paths(manifest)
    neg_paths: list[str] = []
    if use_negatives:
        others = [m for other, m in zip(classes, all_manifests, strict=True) if other != cls]
        neg_paths = negative_paths(manifest, others, near_duplicate_bits)
        if negatives_dir and Path(negatives_dir).is_dir():
            neg_paths += [str(p) for p in folder_images(negatives_dir)]
    mask_paths = None
    if masks_dir:
        mask_paths = [str(Path(masks_dir) / cls / (Path(p).stem + ".png")) for p in paths]
        if not all(Path(p).is_file() for p in mask_paths):
            mask_paths = None
    log.info("class %s: %d images, %d negatives, init %s", cls, len(paths), len(neg_paths), base or "anneal")

    def load(res: int):
        images = load_images(paths, res, desc=cls)
        negatives = load_images(neg_paths, res, desc="negatives") if neg_paths and res == cfg.resolutions[-1] else None
        masks = None
        if mask_paths is not None:
            masks = (load_label_masks(mask_paths, res) == ids[cls]).to(torch.uint8)
        return images, negatives, masks

    centres = None
    if cfg.center == "imagenet":  # the classifier: only a run that asks for ImageNet centres pays it
        from rlseg.cam import class_centre_points
        from rlseg.runtime import resolve_device

        centres = class_centre_points(cls, paths, classes, score_paths, top_classes, cfg.center_min_ratio,
                                      resolve_device(device))
    out = train_single_class(cfg, load, outdir, init_weights=base, device=device, with_negatives=use_negatives,
                             centres=centres)
    with atomic_path(model_out) as tmp:
        shutil.copyfile(out["final"], tmp)
        if labelling is not None:
            add_meta(tmp, labelling=labelling)
    write_csv(history_out, out["history"])
    log.info("class %s: model -> %s, history -> %s (%.1f s)", cls, model_out, history_out, out["seconds"])
    return out


def make_pseudo_gt(model_path: str, manifest: str, class_id: int, out_pairs: str, device: str = "auto",
                   batch_size: int = 32, resolution: int | None = None, crf: dict | None = None,
                   scales: Sequence[float] = (1.0,), flip: bool = False, cam: CamFilter | None = None) -> int:
    """Label each of the class's images with its CNN (at ``resolution`` px, default its training one, at ``scales``
    of it and with ``flip``: :func:`rlseg.inference.object_probability`; refined by a dense CRF with ``crf``'s
    settings, :class:`rlseg.crf.CrfParams`; only the parts ``cam`` supports, :mod:`rlseg.cam`): object -> class
    id, else 0, as VOC palette PNGs at the image's original size; writes the (image, label) pairs CSV. Returns the
    number of images labelled."""
    # torch and the training code: the job's setup_job runs first, and the seconds-long jobs never load them
    from rlseg.crf import CrfParams
    from rlseg.inference import load_model, segment
    from rlseg.runtime import resolve_device

    dev = resolve_device(device)
    model = load_model(model_path, dev)
    paths = used_paths(manifest)
    outdir = Path(out_pairs).parent
    pal = voc_palette()
    crf_params = CrfParams(**crf) if crf is not None else None
    names = unique_stems(paths)  # x.jpg and x.png of one class keep a label each
    rows = []
    # each photo decoded once (resized for the CNN, sized for its label), a batch of them held at a time
    decoded = ((p, name, load_image(p)) for p, name in zip(paths, names, strict=True))
    with tqdm(total=len(paths), desc="pseudo-gt", mininterval=5) as bar:
        for batch in pixel_batches(decoded, last_image_pixels, batch_size):
            labels = segment(model, [im for _, _, im in batch], dev, class_id, resolution, crf_params, scales, flip,
                             cam)
            for (p, name, _), label in zip(batch, labels, strict=True):
                out = child_path(outdir, name, ".png")
                save_png(out, label, palette=pal)
                rows.append({"image": p, "label": str(out),
                             "object_fraction": round(float(label.mean() / class_id), 4)})
            bar.update(len(batch))
    write_csv(out_pairs, rows, ["image", "label", "object_fraction"])
    log.info("pseudo ground truth: %d images -> %s", len(rows), outdir)
    return len(rows)


def base_model_images(base: dict, results: str, manifests: Sequence[str] = ()) -> list[Path]:
    """Images of the base data set: Oxford-IIIT Pet (cats and dogs as one class), a folder, a list file, or every
    configured class's used images together (``classes``: one class-agnostic model, nothing from outside)."""
    if base["source"] == "classes":
        return [Path(p) for p in dict.fromkeys(p for m in manifests for p in used_paths(m))]
    if base["source"] == "folder":
        if not base.get("root") or not Path(base["root"]).is_dir():
            raise FileNotFoundError(f"base_model.root: folder {base.get('root')!r} missing")
        return folder_images(base["root"])
    if base["source"] == "list":
        return read_image_list(base["root"])
    from torchvision.datasets import OxfordIIITPet  # torchvision's data sets: for this download only

    root = Path(base.get("root") or Path(results) / "oxford_pet")
    try:
        ds = OxfordIIITPet(str(root), split="trainval", target_types="segmentation", download=True)
    except Exception as err:
        raise RuntimeError(f"could not download Oxford-IIIT Pet into {root} ({type(err).__name__}: {err}); "
                           "without internet use base_model.source: folder") from err
    return [Path(p) for p in ds._images]


def run_base_model(base: dict, settings: dict, results: str, model_out: str, history_out: str, outdir: str,
                   device: str = "auto", manifests: Sequence[str] = ()) -> None:
    """Train the base model (annealing + normal stages, no negatives) on the base data set; ``manifests`` are
    the classes' manifests, read when ``base["source"] == "classes"``."""
    if base["source"] == "packaged":
        from rlseg.packaged import materialise_start  # torch and the U-Net, for this step only

        materialise_start(settings, model_out, history_out)
        log.info("packaged start for %s -> %s", settings["encoder"], model_out)
        return
    files = base_model_images(base, results, manifests)
    manifest = Path(outdir) / "manifest.csv"
    write_manifest(manifest, finalize_manifests({"base": check_files(files)})["base"])
    cfg = base_model_settings(base, settings)
    log.info("base model: %d images, vol_target %s", len(files), cfg["vol_target"])
    run_single_class("base", str(manifest), [str(manifest)], ["base"], {"base": 1}, cfg, outdir, model_out,
                     history_out, device=device)


def run_multiclass(pair_files: Sequence[str], ids: dict[str, int], settings: dict, model_out: str,
                   history_out: str, checkpoint: str, device: str = "auto") -> None:
    """Train the multi-class network on the (image, label) pairs listed in ``pair_files``."""
    # torch and the training code: the job's setup_job runs first, and the seconds-long jobs never load them
    from rlseg.multiclass import MultiClassConfig, train_multiclass

    pairs = read_pairs(pair_files)
    num_classes = max(ids.values()) + 1
    cfg = MultiClassConfig.from_dict(settings)
    log.info("multi-class %s: %d images, %d outputs", cfg.arch, len(pairs), num_classes)
    rows = train_multiclass(pairs, num_classes, cfg, model_out, checkpoint, device=device)
    write_csv(history_out, rows)
