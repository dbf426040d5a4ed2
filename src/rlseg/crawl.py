"""Web image collection with icrawler: every file checked in memory, stored under its content hash, recorded.

icrawler's own downloader opens images with PIL and catches only ``OSError``, so a decompression bomb or another
decoder error kills its thread. :class:`CheckedDownloader` replaces its ``download``: it retries network errors
with exponential backoff (counted), reads each response up to ``web.max_bytes`` within ``web.deadline`` seconds
(a trickling server cannot hold a thread), decodes it with :func:`rlseg.imageio.load_image`, and turns every
failure into a counted, recorded rejection. Files are named by their SHA-1, never by the URL, written under a
temporary name and renamed; a file already there is trusted only when its bytes hash to its name.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from icrawler import ImageDownloader
from PIL import Image

from rlseg.imageio import MAX_PIXELS, MIN_SIDE, BadImageError, load_image
from rlseg.ingest import WEB_COLUMNS, dhash
from rlseg.io import NetworkUnavailable, atomic_path
from rlseg.settings import defaults

log = logging.getLogger(__name__)

SEARCH_WORDS = {
    "aeroplane": "airplane",
    "tvmonitor": "tv monitor",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "motorbike": "motorbike",
}
ENGINE_HOSTS = {"bing": "www.bing.com", "baidu": "image.baidu.com", "flickr": "api.flickr.com",
                "google": "www.google.com"}
FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif", "MPO": "jpg"}

__all__ = ["CheckedDownloader", "NetworkUnavailable", "crawl_class", "crawl_urls", "default_queries"]


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


WEB = defaults("web")


def read_body(response, max_bytes: int, deadline: float) -> bytes:
    """The body of a streamed ``requests`` response, refused past ``max_bytes`` bytes or ``deadline`` seconds."""
    size = response.headers.get("Content-Length", "")
    if size.isdigit() and int(size) > max_bytes:
        raise _TooLarge(f"response of {int(size)} bytes > web.max_bytes = {max_bytes}")
    end = time.monotonic() + deadline
    chunks, total = [], 0
    for chunk in response.iter_content(chunk_size=65536):
        total += len(chunk)
        if total > max_bytes:
            raise _TooLarge(f"response over web.max_bytes = {max_bytes} bytes")
        if time.monotonic() > end:
            raise _TooSlow(f"download not done within web.deadline = {deadline:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def store(folder: Path, filename: str, data: bytes, digest: str) -> Path:
    """Write ``data`` as ``folder/filename`` atomically, unless a file whose bytes hash to ``digest`` is there (a
    file an interrupted crawl left half-written is replaced)."""
    path = folder / filename
    if path.is_file():
        with open(path, "rb") as fh:
            if hashlib.file_digest(fh, "sha1").hexdigest() == digest:
                return path
        log.warning("%s: bytes do not match its name (an interrupted download?): written again", path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def default_queries(cls: str) -> list[str]:
    """Search words for a class name (VOC names made searchable: aeroplane -> airplane)."""
    return [SEARCH_WORDS.get(cls, cls.replace("_", " "))]


class CheckedDownloader(ImageDownloader):
    """icrawler downloader that checks each image before writing it and records every outcome.

    Configure through class attributes set by :func:`_downloader_for` (icrawler instantiates the class itself).
    """

    records: list[dict]
    counters: dict[str, int]
    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE
    engine: str = ""
    query: str = ""
    backoff: float = 0.5
    retries: int = WEB["retries"]
    timeout: float = WEB["timeout"]
    max_bytes: int = WEB["max_bytes"]
    deadline: float = WEB["deadline"]
    _record_lock = threading.Lock()

    def _record(self, row: dict, counter: str) -> None:
        with self._record_lock:
            self.records.append(row)
            self.counters[counter] = self.counters.get(counter, 0) + 1

    def download(self, task, default_ext, timeout=5, max_retry=3, overwrite=False, **kwargs):  # noqa: D417
        """Fetch ``task['file_url']`` with retries, check it, write it as ``<sha1>.<ext>``.

        The retries and the timeout are the class's (``web.retries``, ``web.timeout``), whatever icrawler passes.
        """
        url = task["file_url"]
        max_retry, timeout = self.retries + 1, self.timeout
        task["success"] = False
        task["filename"] = None
        base = {"path": "", "sha1": "", "width": "", "height": "", "status": "skipped", "reason": "", "url": url,
                "engine": self.engine, "query": self.query, "dhash": ""}
        data = None
        for attempt in range(max(1, max_retry)):
            if self.signal.get("reach_max_num"):
                return False
            try:
                with self.session.get(url, timeout=timeout, stream=True) as response:
                    if response.status_code != 200:
                        self._record({**base, "reason": f"HTTP {response.status_code}"}, "failed")
                        return False
                    data = read_body(response, self.max_bytes, self.deadline)
                break
            except (_TooLarge, _TooSlow) as err:
                self._record({**base, "reason": str(err)}, "rejected")
                return False
            except Exception as err:  # noqa: BLE001 - requests raises many network error types
                with self._record_lock:
                    self.counters["network_errors"] = self.counters.get("network_errors", 0) + 1
                last = f"{type(err).__name__}: {err}"
                if attempt + 1 < max_retry:
                    time.sleep(self.backoff * 2**attempt)
        if data is None:
            self._record({**base, "reason": f"network error after {max_retry} tries ({last[:200]})"}, "failed")
            return False
        try:
            img = load_image(url, max_pixels=self.max_pixels, min_side=self.min_side, data=data)
            with Image.open(io.BytesIO(data)) as raw:
                ext = FORMAT_EXT.get(raw.format or "", "jpg")
        except BadImageError as err:
            self._record({**base, "reason": err.reason}, "rejected")
            return False
        digest = hashlib.sha1(data).hexdigest()
        filename = f"{digest}.{ext}"
        with self.lock:
            if self.reach_max_num():
                self.signal.set(reach_max_num=True)
                return False
            self.fetched_num += 1
        path = store(Path(self.storage.root_dir), filename, data, digest)
        row = {**base, "path": str(path), "sha1": digest, "width": img.size[0],
               "height": img.size[1], "status": "used", "dhash": f"{dhash(img):016x}"}
        self._record(row, "downloaded")
        task["success"] = True
        task["filename"] = filename
        return True


def _downloader_for(records: list[dict], counters: dict[str, int], images: dict, web: dict, engine: str,
                    query: str, backoff: float) -> type[CheckedDownloader]:
    """A downloader class bound to this crawl's records and settings (``web``: the config's web block; keys it
    lacks take the schema's defaults)."""
    web = {**WEB, **web}
    return type("BoundCheckedDownloader", (CheckedDownloader,), {
        "records": records, "counters": counters, "max_pixels": images.get("max_pixels", MAX_PIXELS),
        "min_side": images.get("min_side", MIN_SIDE), "engine": engine, "query": query, "backoff": backoff,
        "retries": web["retries"], "timeout": web["timeout"], "max_bytes": web["max_bytes"],
        "deadline": web["deadline"],
    })


def check_network(host: str, timeout: float = 3.0) -> None:
    """Raise :class:`NetworkUnavailable` within ``timeout`` seconds if ``host`` cannot be reached on port 443."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return
    except OSError as err:
        raise NetworkUnavailable(
            f"no network: cannot reach {host} ({err}). The web source needs internet; to use images you already "
            "have, set images: {source: folder, root: <root>} with one folder of images per class "
            "(<root>/<class>/*.jpg)."
        ) from None


def _finish(records: list[dict], counters: dict[str, int], folder: Path) -> list[dict]:
    seen: dict[str, str] = {}
    for r in records:  # two URLs with the same bytes: keep the first
        if r["status"] == "used":
            if r["sha1"] in seen:
                r.update(status="skipped", reason=f"duplicate of {seen[r['sha1']]}")
            else:
                seen[r["sha1"]] = r["url"]
    log.info("crawl into %s: %s", folder, ", ".join(f"{k} {v}" for k, v in sorted(counters.items())) or "nothing")
    return records


def crawl_urls(urls: list[str], folder: str | os.PathLike, images: dict | None = None, threads: int = 2,
               web: dict | None = None, backoff: float = 0.2) -> list[dict]:
    """Download a list of image URLs through icrawler's ``UrlListCrawler`` with :class:`CheckedDownloader`
    (``web``: retries, timeout, max_bytes, deadline; the schema's defaults for the keys it lacks)."""
    from icrawler.builtin import UrlListCrawler  # icrawler and its HTTP stack: only downloads pay their import

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    counters: dict[str, int] = {}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:  # never inside the data folders
        fh.write("".join(u + "\n" for u in urls))
    url_file = Path(fh.name)
    try:
        crawler = UrlListCrawler(
            downloader_cls=_downloader_for(records, counters, images or {}, web or {}, "urls", "", backoff),
            downloader_threads=threads, storage={"root_dir": str(folder)}, log_level=logging.CRITICAL,
        )
        crawler.crawl(str(url_file), max_num=0)
    finally:
        url_file.unlink(missing_ok=True)
    return _finish(records, counters, folder)


def crawl_class(cls: str, web: dict, images: dict, folder: str | os.PathLike) -> list[dict]:
    """Search the configured engine for each of the class's queries; returns manifest rows (WEB_COLUMNS + dhash).

    Raises:
        NetworkUnavailable: within seconds when the engine cannot be reached.
    """
    # icrawler and its HTTP stack: only downloads pay their import
    from icrawler.builtin import BaiduImageCrawler, BingImageCrawler, FlickrImageCrawler, GoogleImageCrawler

    engine = web["engine"]
    check_network(ENGINE_HOSTS[engine])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    queries = web.get("queries", {}).get(cls) or default_queries(cls)
    records: list[dict] = []
    counters: dict[str, int] = {}
    per_query = max(1, web["max_images"] // len(queries))
    for q in queries:
        dl = _downloader_for(records, counters, images, web, engine, q, 0.5)
        common = {"downloader_cls": dl, "downloader_threads": web.get("threads", 4),
                  "storage": {"root_dir": str(folder)}, "log_level": logging.WARNING}
        if engine == "flickr":
            key = os.environ.get("FLICKR_API_KEY")
            if not key:
                raise RuntimeError("web.engine flickr needs an API key in the environment variable FLICKR_API_KEY")
            crawler = FlickrImageCrawler(key, **common)
            crawler.crawl(max_num=per_query, text=q)
        else:
            crawler_cls = {"bing": BingImageCrawler, "baidu": BaiduImageCrawler, "google": GoogleImageCrawler}[engine]
            crawler_cls(**common).crawl(keyword=q, max_num=per_query)
    rows = _finish(records, counters, folder)
    return [{k: r.get(k, "") for k in WEB_COLUMNS} for r in rows]
