"""Image sources: where a class's candidate images come from, and where their true masks are, if anywhere.

A source is an :class:`ImageSource` registered under its ``images.source`` name. The workflow asks it for a
class's candidate rows (checked images, used or skipped with a reason), for a training image's true mask (the upper
bound and scoring only; never training), and which file a workflow rule must make first. A new source is one
module that calls :func:`register`, plus its name in the schema's ``images.source`` enum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlseg.ingest import check_files, folder_images, read_manifest
from rlseg.settings import ConfigError
from rlseg.voc import VOC_CLASSES, true_mask_for

__all__ = ["ImageSource", "get_source", "register"]


def _unchecked(config: dict) -> None:
    return None


@dataclass(frozen=True)
class ImageSource:
    """One way of collecting a class's images.

    Attributes:
        name: the ``images.source`` value.
        candidates: ``(cls, images, web, results) -> rows``: the class's candidate images, each checked (see
            :func:`rlseg.ingest.check_files`), from the config's ``images`` and ``web`` blocks.
        true_mask: ``(image path, cls, results) -> mask path or None``; None for a source without masks.
        prepared_by: a file (relative to the results folder) a workflow rule makes before ``candidates`` runs.
        check: config checks beyond the schema, run before any job (raise :class:`rlseg.settings.ConfigError`).
        negatives_dir: ``results -> folder`` of extra background-only negatives the source provides, if any.
        monitor_masks_dir: ``results -> folder`` of ``<class>/<stem>.png`` true masks that training may *monitor*
            (F-measure in the history; never a loss), if the source has them there.
    """

    name: str
    candidates: Callable[[str, dict, dict, Path], list[dict]]
    true_mask: Callable[[str, str, Path], Path | None] | None = None
    prepared_by: str | None = None
    check: Callable[[dict], None] = _unchecked
    negatives_dir: Callable[[Path], Path] | None = None
    monitor_masks_dir: Callable[[Path], Path] | None = None


_SOURCES: dict[str, ImageSource] = {}


def register(source: ImageSource) -> ImageSource:
    """Make ``source`` available under ``images.source: <source.name>``."""
    _SOURCES[source.name] = source
    return source


def get_source(name: str) -> ImageSource:
    """The registered source called ``name``."""
    if name not in _SOURCES:
        raise ValueError(f"images.source {name!r} is not a known image source; known: {sorted(_SOURCES)}")
    return _SOURCES[name]


def _checked(files: list[Path], images: dict, root: Path | None = None) -> list[dict]:
    return check_files(files, root=root, max_pixels=images["max_pixels"], min_side=images["min_side"],
                       on_bad_image=images["on_bad_image"])


# --- the built-in sources --------------------------------------------------------------------------------------


def _synthetic_candidates(cls: str, images: dict, web: dict, results: Path) -> list[dict]:
    return _checked(folder_images(results / "world" / "images" / cls), images)


register(ImageSource(
    name="synthetic",
    candidates=_synthetic_candidates,
    true_mask=lambda path, cls, results: results / "world" / "masks" / cls / f"{Path(path).stem}.png",
    prepared_by="world/summary.json",
    negatives_dir=lambda results: results / "world" / "negatives",
    monitor_masks_dir=lambda results: results / "world" / "masks",
))


def _folder_candidates(cls: str, images: dict, web: dict, results: Path) -> list[dict]:
    folder = Path(images["root"]) / cls
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: class folder missing (images.source = folder)")
    return _checked(folder_images(folder), images, root=Path(images["root"]))


def _folder_check(config: dict) -> None:
    root = config["images"].get("root")
    if not root:
        raise ConfigError("images.root: required when images.source is folder")
    for c in config["classes"]:
        folder = Path(root) / c
        if not folder.is_dir():
            raise ConfigError(f"images.root: class folder {folder} is missing")
        if not any(p.suffix.lower() in (".jpg", ".jpeg", ".png") for p in folder.iterdir()):
            raise ConfigError(f"images.root: class folder {folder} has no .jpg/.jpeg/.png images")


register(ImageSource(name="folder", candidates=_folder_candidates, check=_folder_check))


def _voc_single_candidates(cls: str, images: dict, web: dict, results: Path) -> list[dict]:
    index = results / "voc" / "pascal_single.csv"
    return _checked([Path(r["path"]) for r in read_manifest(index) if r["class"] == cls], images)


def _voc_single_check(config: dict) -> None:
    if not config["images"].get("root"):
        raise ConfigError("images.root: required when images.source is voc_single (where VOCdevkit is or goes)")
    bad = [c for c in config["classes"] if c not in VOC_CLASSES[1:]]
    if bad:
        raise ConfigError(f"classes: {bad} are not Pascal VOC classes (images.source = voc_single)")


def _voc_true_mask(path: str, cls: str, results: Path) -> Path | None:
    return true_mask_for(path)


register(ImageSource(name="voc_single", candidates=_voc_single_candidates, true_mask=_voc_true_mask,
                     prepared_by="voc/pascal_single.csv", check=_voc_single_check))


def _web_candidates(cls: str, images: dict, web: dict, results: Path) -> list[dict]:
    from rlseg.crawl import crawl_class  # icrawler and its HTTP stack: imported by the web source alone

    return crawl_class(cls, web, images, results / "web" / cls)


register(ImageSource(name="web", candidates=_web_candidates))
