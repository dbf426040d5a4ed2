"""Web collection: icrawler's real downloader against an HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fixtures import bomb_png, cmyk_jpeg, corrupt_jpeg, good_jpeg, good_png, grey_jpeg, html_page, rgba_png, tiny

from rlseg.crawl import NetworkUnavailable, crawl_class, crawl_urls, default_queries

ROUTES = {
    "/good.jpg": (200, good_jpeg(0), 0),
    "/good.png": (200, good_png(1), 0),
    "/corrupt.jpg": (200, corrupt_jpeg(), 0),
    "/page.jpg": (200, html_page(), 0),
    "/tiny.png": (200, tiny(), 0),
    "/alpha.png": (200, rgba_png(), 0),
    "/grey.jpg": (200, grey_jpeg(), 0),
    "/cmyk.jpg": (200, cmyk_jpeg(), 0),
    "/copy-of-good.jpg": (200, good_jpeg(0), 0),
    "/bomb.png": (200, bomb_png(), 0),
    "/missing.jpg": (404, b"not found", 0),
    "/slow.jpg": (200, good_jpeg(5), 3.0),
}
EXPECTED = {
    "/good.jpg": ("used", ""),
    "/good.png": ("used", ""),
    "/corrupt.jpg": ("skipped", "corrupt or truncated"),
    "/page.jpg": ("skipped", "not an image"),
    "/tiny.png": ("skipped", "too small"),
    "/alpha.png": ("used", ""),
    "/grey.jpg": ("used", ""),
    "/cmyk.jpg": ("used", ""),
    "/copy-of-good.jpg": ("skipped", "duplicate of"),
    "/bomb.png": ("skipped", "too many pixels"),
    "/missing.jpg": ("skipped", "HTTP 404"),
    "/slow.jpg": ("skipped", "network error"),
}


class Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path in STREAMED:
            return self.stream(*STREAMED[self.path])
        status, body, delay = ROUTES.get(self.path, (404, b"", 0))
        if delay:
            time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def stream(self, body: bytes, pause: float, declare_length: bool) -> None:
        """Send ``body`` in 1 kB pieces, ``pause`` seconds apart; without a Content-Length when not declared."""
        try:
            self.send_response(200)
            if declare_length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(0, len(body), 1024):
                self.wfile.write(body[i : i + 1024])
                self.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


BIG = good_jpeg(7) + bytes(200_000)  # a valid JPEG followed by padding: only its size is wrong
STREAMED = {
    "/big-declared.jpg": (BIG, 0.0, True),  # refused from its Content-Length
    "/big-undeclared.jpg": (BIG, 0.0, False),  # refused while it downloads
    "/trickle.jpg": (good_jpeg(8) + bytes(30_000), 0.2, True),  # a byte stream well within the timeout per read
}


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_downloader_checks_every_file(server, tmp_path):
    urls = [server + p for p in ROUTES]
    folder = tmp_path / "web" / "horse"
    rows = crawl_urls(urls, folder, images={"min_side": 32, "max_pixels": 50_000_000}, threads=1,
                      web={"retries": 1, "timeout": 1.0}, backoff=0.01)
    by_path = {r["url"][len(server):]: r for r in rows}
    assert set(by_path) == set(ROUTES)
    for path, (status, reason) in EXPECTED.items():
        row = by_path[path]
        assert row["status"] == status, (path, row)
        assert reason in row["reason"], (path, row)
    used = [r for r in rows if r["status"] == "used"]
    for r in used:  # named by content hash, never by the URL
        name = r["path"].rsplit("/", 1)[-1]
        assert name.split(".")[0] == r["sha1"] and len(r["sha1"]) == 40
        assert r["engine"] == "urls" and int(r["width"]) > 0
    assert {p.name for p in folder.iterdir()} == {r["path"].rsplit("/", 1)[-1] for r in used if "duplicate" not in
                                                  r["reason"]}
    # nothing written outside the class folder
    assert sorted(p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*") if p.is_file()) == [
        ("web", "horse")] * len(list(folder.iterdir()))
    assert Handler.hits["/slow.jpg"] == 2  # retried once, then counted as a network error


def test_default_queries_make_voc_names_searchable():
    assert default_queries("aeroplane") == ["airplane"]
    assert default_queries("tvmonitor") == ["tv monitor"]
    assert default_queries("pottedplant") == ["potted plant"]
    assert default_queries("diningtable") == ["dining table"]
    assert default_queries("horse") == ["horse"]


@pytest.mark.parametrize("engine", ["bing", "baidu", "flickr", "google"])
def test_offline_crawl_fails_fast_with_the_network_message(engine, tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    t0 = time.time()
    with pytest.raises(NetworkUnavailable, match=r"no network.*source: folder"):
        crawl_class("horse", {"engine": engine, "max_images": 10, "queries": {}}, {}, tmp_path / "horse")
    assert time.time() - t0 < 5


@pytest.mark.slow
def test_size_cap_and_deadline_refuse_large_and_trickling_responses(server, tmp_path):
    folder = tmp_path / "web" / "horse"
    t0 = time.time()
    rows = crawl_urls([server + p for p in STREAMED] + [server + "/good.jpg"], folder, images={"min_side": 32},
                      threads=2, web={"retries": 0, "timeout": 2.0, "max_bytes": 100_000, "deadline": 1.5})
    assert time.time() - t0 < 20  # the trickle alone would take 6 s, and forever with a slower server
    by = {r["url"][len(server):]: r for r in rows}
    assert "web.max_bytes" in by["/big-declared.jpg"]["reason"]
    assert "web.max_bytes" in by["/big-undeclared.jpg"]["reason"]
    assert "web.deadline" in by["/trickle.jpg"]["reason"]
    assert by["/good.jpg"]["status"] == "used"
    assert sorted(p.name for p in folder.iterdir()) == [Path(by["/good.jpg"]["path"]).name]


@pytest.mark.slow
def test_a_half_written_file_from_an_interrupted_crawl_is_written_again(server, tmp_path):
    import hashlib

    folder = tmp_path / "web" / "horse"
    folder.mkdir(parents=True)
    body = good_jpeg(0)
    sha1 = hashlib.sha1(body).hexdigest()
    (folder / f"{sha1}.jpg").write_bytes(body[: len(body) // 3])  # what a killed crawl left
    (folder / f".{sha1}.jpg.abcd1234.tmp").write_bytes(body[:10])  # and its temp file
    rows = crawl_urls([server + "/good.jpg"], folder, images={"min_side": 32}, threads=1)
    assert rows[0]["status"] == "used" and rows[0]["sha1"] == sha1
    assert (folder / f"{sha1}.jpg").read_bytes() == body
    assert sorted(p.name for p in folder.iterdir()) == [f"{sha1}.jpg"]
    rows = crawl_urls([server + "/good.jpg"], folder, images={"min_side": 32}, threads=1)  # intact: kept as it is
    assert rows[0]["status"] == "used" and (folder / f"{sha1}.jpg").read_bytes() == body
