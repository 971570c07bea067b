"""The download stage against a loopback image host with real files and injected faults."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_host import REALDATA, ImageHost
from PIL import Image

from entitynet.cli import main
from entitynet.config import DownloadConfig
from entitynet.download.fetch import Fetcher
from entitynet.rundir import RunDir
from entitynet.tables import CANDIDATE_SCHEMA

REAL_FILES = sorted(
    f"{folder}/{path.name}"
    for folder in ("image_edge_cases", "labelled_photos/cameratrapai")
    for path in (REALDATA / folder).glob("*")
    if path.suffix.lower() in (".jpg", ".png", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".ico", ".avif", ".heif", ".svg")
) if REALDATA.is_dir() else []

LOOPBACK_ONLY = ["--set", "download.allowed_networks=[127.0.0.1/32]"]


@pytest.fixture
def host():
    hosts = []

    def start(**options) -> ImageHost:
        server = ImageHost(**options)
        hosts.append(server)
        return server

    yield start
    for server in hosts:
        server.close()


def searched_run(folder: Path, urls: list[str]) -> RunDir:
    """A run whose search stage is done, with one candidate per URL (two queries for some)."""
    run = RunDir(folder)
    rows = [{"url": url, "query_id": f"q{i % 7}", "engine": "pool", "rank": i, "text": f"alt text {i}",
             "page_url": None, "width": None, "height": None, "mime": None, "license": "CC BY 4.0",
             "license_url": None, "attribution": "someone"} for i, url in enumerate(urls)]
    (folder / "candidates").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA), folder / "candidates" / "part-00000.parquet")
    run.run_stage("search", {"made": "by hand"}, [], lambda: {})
    return run


def download(run: RunDir, *extra: str) -> int:
    return main(["-q", "download", "--run", str(run.root), "--config", "demo", *LOOPBACK_ONLY,
                 "--set", "download.read_timeout=1.0", "--set", "download.connect_timeout=1.0",
                 "--set", "download.max_attempts=2", "--set", "download.backoff=0.01",
                 "--set", "download.max_bytes=1000000", "--set", "download.min_side=16", *extra])


def stored(run: RunDir) -> list[dict]:
    """Every stored row, in plan order (shards are written as downloads finish; rows carry their position)."""
    return [row for path in sorted(run.path("images").glob("shard-*[0-9].parquet"))
            for row in sorted(pq.read_table(path).to_pylist(), key=lambda row: row["position"])]


def failures(run: RunDir) -> dict[str, str]:
    return {row["url"]: row["reason"] for row in pq.read_table(run.path("images") / "failures.parquet").to_pylist()}


def test_every_url_ends_stored_or_failed_with_the_expected_reason(realdata, host, tmp_path):
    server = host(slow=3.0)
    alias = host(address="127.0.0.2")  # a loopback address the allowance does not cover
    b = server.base
    faults = {
        f"{b}/fault/404": "http_404", f"{b}/fault/500": "http_5xx", f"{b}/fault/slow": "timeout",
        f"{b}/fault/reset": "connection", f"{b}/fault/truncated": "truncated", f"{b}/fault/html": "not_image",
        f"{b}/fault/huge": "too_large", f"{b}/fault/redirect-loop": "too_many_redirects",
        f"{b}/fault/redirect-to/127.0.0.2:{alias.server_address[1]}": "blocked_address",
        f"{alias.base}/gen/200x150/9.jpg": "blocked_address", f"{b}/fault/noai": "opted_out",
        f"{b}/real/image_edge_cases/decompression_bomb.gif": "decompression_bomb",
        f"{b}/real/image_edge_cases/broken.png": "corrupt_image",
        f"{b}/real/image_edge_cases/truncated_jpeg.jpg": "corrupt_image",
        f"{b}/real/labelled_photos/cameratrapai/african_elephants_truncated_file.jpg": "corrupt_image",
        f"{b}/real/image_edge_cases/avif_hopper.heif": "unsupported_format",
        f"{b}/real/image_edge_cases/anchor_horizontal.svg": "not_image",
        f"{b}/real/image_edge_cases/multipage.tiff": "too_small",
        "ftp://127.0.0.1/x.jpg": "bad_url",
    }
    good = [f"{b}/fault/429-once/a", f"{b}/fault/lying-type", f"{b}/gen/800x600/1.jpg", f"{b}/gen/300x1000/2.png"]
    urls = [f"{b}/real/{name}" for name in REAL_FILES] + list(faults) + good
    run = searched_run(tmp_path / "run", urls)
    started = time.monotonic()
    assert download(run, "--set", "download.urls_per_shard=10", "--set", "download.max_bytes=2500000") == 0
    assert time.monotonic() - started < 60

    images, failed = stored(run), failures(run)
    assert len(images) + len(failed) == len(set(urls))
    assert not {row["url"] for row in images} & set(failed)
    for url, reason in faults.items():
        assert failed.get(url) == reason, (url, failed.get(url))
    assert {f"{b}/fault/429-once/a", f"{b}/fault/lying-type", f"{b}/gen/800x600/1.jpg"} <= {row["url"] for row in images}
    assert failed[f"{b}/gen/300x1000/2.png"] == "bad_aspect"
    for row in images:
        with Image.open(io.BytesIO(row["image"])) as picture:
            picture.load()
            assert picture.mode == "RGB" and picture.format == "JPEG"
            assert max(picture.size) <= 512 and min(picture.size) >= 16
            assert picture.size == (row["width"], row["height"])
        assert row["sources"] and row["sources"][0]["text"].startswith("alt text")
    elephants = {row["url"].rsplit("/", 1)[1]: row for row in images if "african_elephants" in row["url"]}
    assert elephants["african_elephants_with_exif_orientation.jpg"]["width"] == 512  # stored portrait, EXIF-rotated
    stats = json.loads(run.marker("download").read_text())["stats"]
    assert stats["stored"] == len(images) and stats["failed"] == len(failed)
    assert sum(stats["reasons"].values()) == len(failed)
    assert server.hits["/fault/429-once/a"] == 2  # retried after Retry-After


def test_the_guard_refuses_private_targets_before_any_socket_is_opened(monkeypatch):
    opened = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: opened.append(a) or (_ for _ in ()).throw(AssertionError))
    fetcher = Fetcher(DownloadConfig(max_attempts=1))
    for url in ["http://10.0.0.1/a.jpg", "http://169.254.169.254/latest/meta-data", "http://192.168.1.1/x.png",
                "http://[::1]/x.jpg", "http://127.0.0.1:9/x.jpg", "http://[fe80::1]/y.jpg", "http://224.0.0.1/z.jpg",
                "http://0.0.0.0/x.jpg", "http://[::ffff:10.0.0.1]/x.jpg"]:
        result = fetcher.fetch(url)
        assert result.reason == "blocked_address", (url, result)
    assert opened == []


def test_connections_to_a_host_are_kept_alive_and_reused(host):
    server = host(keep_alive=True)
    fetcher = Fetcher(DownloadConfig(allowed_networks=["127.0.0.1/32"], min_side=16))
    for number in range(12):
        assert fetcher.fetch(f"{server.base}/gen/200x150/{number}.jpg").ok
    assert server.connections == 1


def test_a_retry_after_longer_than_max_wait_fails_at_once(host):
    server = host()
    fetcher = Fetcher(DownloadConfig(allowed_networks=["127.0.0.1/32"], max_attempts=5, max_wait=30))
    started = time.monotonic()
    result = fetcher.fetch(f"{server.base}/fault/429-long")
    assert result.reason == "http_429" and "3600" in result.detail
    assert server.hits["/fault/429-long"] == 1 and time.monotonic() - started < 5


def test_identical_and_near_identical_images_are_grouped(host, tmp_path):
    server = host()
    b = server.base
    urls = [f"{b}/same/4.jpg", f"{b}/same/4.jpg?copy=1", f"{b}/scaled/640x480/4.jpg", f"{b}/gen/320x240/5.jpg"]
    run = searched_run(tmp_path / "run", urls)
    assert download(run) == 0
    duplicates = pq.read_table(run.path("images") / "duplicates.parquet").to_pylist()
    by_url = {row["url"]: row for row in duplicates}
    assert by_url[f"{b}/same/4.jpg?copy=1"]["kind"] == "identical"
    assert by_url[f"{b}/same/4.jpg?copy=1"]["canonical_url"] == f"{b}/same/4.jpg"
    assert by_url[f"{b}/scaled/640x480/4.jpg"]["kind"] == "near"
    assert by_url[f"{b}/scaled/640x480/4.jpg"]["canonical_url"] == f"{b}/same/4.jpg"
    assert f"{b}/gen/320x240/5.jpg" not in by_url and f"{b}/same/4.jpg" not in by_url
    stats = json.loads(run.marker("download").read_text())["stats"]["duplicates"]
    assert stats["unique"] == 2


def test_retry_failures_refetches_only_transient_ones(host, tmp_path):
    server = host()
    b = server.base
    urls = [f"{b}/fault/429-once/z", f"{b}/fault/404", f"{b}/gen/300x200/8.jpg"]
    run = searched_run(tmp_path / "run", urls)
    assert download(run, "--set", "download.max_attempts=1") == 0
    assert failures(run) == {f"{b}/fault/429-once/z": "http_429", f"{b}/fault/404": "http_404"}
    assert download(run, "--set", "download.max_attempts=1") == 0  # complete: nothing fetched
    assert server.hits["/fault/429-once/z"] == 1
    assert download(run, "--set", "download.max_attempts=1", "--retry-failures") == 0
    assert failures(run) == {f"{b}/fault/404": "http_404"}
    assert server.hits["/fault/404"] == 1 and server.hits["/fault/429-once/z"] == 2
    assert len(stored(run)) == 2


def test_alternatives_are_tried_in_order_and_retried_together_when_one_failed_transiently(host, tmp_path):
    """An import's row: its first link is the planned URL, the others are tried after it in order."""
    server = host()
    b = server.base
    run = searched_run(tmp_path / "run", [f"{b}/fault/500/a", f"{b}/fault/404/b"])
    table = pq.read_table(run.path("candidates") / "part-00000.parquet")
    table = table.set_column(table.schema.get_field_index("alternatives"), "alternatives", pa.array(
        [[f"{b}/fault/404/a", f"{b}/fault/429-once/a"], [f"{b}/gen/200x150/3.jpg", f"{b}/gen/200x150/4.jpg"]],
        pa.list_(pa.string())))
    pq.write_table(table, run.path("candidates") / "part-00000.parquet")
    assert download(run, "--set", "download.max_attempts=1") == 0
    (image,) = stored(run)
    assert image["url"] == f"{b}/gen/200x150/3.jpg"
    assert image["alternatives"] == [f"{b}/fault/404/b", f"{b}/gen/200x150/4.jpg"]  # the planned URL first
    assert server.hits["/gen/200x150/4.jpg"] == 0
    (failure,) = pq.read_table(run.path("images") / "failures.parquet").to_pylist()
    assert failure["url"] == f"{b}/fault/500/a" and failure["attempts"] == 3
    assert (failure["reason"], failure["transient"]) == ("http_5xx", True)  # the first transient reason
    assert [part.split(":")[0].split(" ")[0:2] for part in failure["detail"].split("; ")] == [
        ["link", "1/3"], ["link", "2/3"], ["link", "3/3"]]
    assert download(run, "--set", "download.max_attempts=1", "--retry-failures") == 0
    assert {row["url"] for row in stored(run)} == {f"{b}/gen/200x150/3.jpg", f"{b}/fault/429-once/a"}
    assert server.hits["/fault/500/a"] == 2 and server.hits["/fault/404/a"] == 2  # all links again, in order


def test_the_plan_is_the_same_however_many_buckets_group_it(tmp_path):
    """URLs in order of first appearance, every candidate a source in candidate order with its own
    alternatives, cut into shards: whether grouped in one bucket or many."""
    from entitynet.download.plan import make_plan
    from entitynet.tables import read_plan

    parts = []
    for number in range(3):
        rows = [{"url": f"https://example.org/{(7 * i + number) % 23}.jpg", "query_id": f"q{number}-{i}", "engine": "pool",
                 "rank": i, "text": f"alt {number} {i}", "alternatives": [f"https://mirror.example/{number}/{i}.jpg"],
                 "split": "test" if i % 5 == 0 else None} for i in range(20)]
        parts.append(tmp_path / f"part-{number:05d}.parquet")
        pq.write_table(pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA), parts[-1])
    candidates = [row for part in parts for row in pq.read_table(part).to_pylist()]
    expected_urls = list(dict.fromkeys(row["url"] for row in candidates))
    plans = {}
    for buckets_of in (1000, 7, 1):
        plan_dir = tmp_path / f"plan-{buckets_of}"
        shards = make_plan(parts, plan_dir, urls_per_shard=5, bucket_rows=buckets_of)
        assert shards == 5 and not (plan_dir / "buckets").exists()
        plans[buckets_of] = [planned for n in range(shards) for planned in read_plan(plan_dir / f"shard-{n:05d}.parquet")]
    assert plans[1000] == plans[7] == plans[1]
    assert [planned.url for planned in plans[7]] == expected_urls
    for planned in plans[7]:
        found = [row for row in candidates if row["url"] == planned.url]
        assert [(s.query_id, s.text, s.split) for s in planned.sources] == [(r["query_id"], r["text"], r["split"]) for r in found]
        assert [planned.tails[t] for t in planned.tail_of] == [r["alternatives"] for r in found]


def _shard_files(run: RunDir) -> list[str]:
    return sorted(p.name for p in run.path("images").iterdir())


def test_kill_9_then_rerun_gives_the_uninterrupted_result(host, tmp_path):
    server = host(delay=0.05)
    urls = [f"{server.base}/gen/{200 + i}x{150 + i}/{i}.jpg" for i in range(60)]
    reference = searched_run(tmp_path / "reference", urls)
    assert download(reference, "--set", "download.urls_per_shard=10", "--set", "download.threads=4") == 0
    expected = sorted(row["image_id"] for row in stored(reference))

    run = searched_run(tmp_path / "run", urls)
    args = [sys.executable, "-m", "entitynet", "-q", "download", "--run", str(run.root), "--config", "demo", *LOOPBACK_ONLY,
            "--set", "download.urls_per_shard=10", "--set", "download.threads=4"]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if len(list(run.path("images").glob("shard-*.json"))) >= 2:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    done_before = len(list(run.path("images").glob("shard-*.json")))
    assert 2 <= done_before < 6, "the kill should land mid-run"

    assert download(run, "--set", "download.urls_per_shard=10", "--set", "download.threads=4") == 0
    images = stored(run)
    assert sorted(row["image_id"] for row in images) == expected
    assert len({row["url"] for row in images}) == len(images) == 60
    assert not [name for name in _shard_files(run) if name.endswith(".tmp")]
    assert json.loads(run.marker("download").read_text())["stats"]["shards"] == 6


def test_a_shard_streams_its_images_to_its_file_before_it_ends(host, tmp_path):
    """Images are not held until the shard ends: the shard's (temporary) file grows while most of
    the shard's URLs are still to be fetched."""
    server = host(delay=0.03)
    urls = [f"{server.base}/gen/{300 + i}x{200 + i}/{i}.jpg" for i in range(160)]
    run = searched_run(tmp_path / "run", urls)
    args = [sys.executable, "-m", "entitynet", "-q", "download", "--run", str(run.root), "--config", "demo", *LOOPBACK_ONLY,
            "--set", "download.urls_per_shard=160", "--set", "download.threads=4", "--set", "download.min_side=16"]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    grown, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if sum(server.hits.values()) > 100:  # only what is on disk while 60 URLs are still to come counts
            time.sleep(0.02)
            continue
        for partial in run.path("images").glob(".shard-00000.parquet.*.tmp"):
            with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
                grown = max(grown, partial.stat().st_size)
        time.sleep(0.02)
    assert child.wait(timeout=60) == 0
    assert grown > 200_000  # row groups of images were on disk long before the shard's end
    assert len(stored(run)) == 160


def test_two_processes_split_the_shards_without_overlap_or_gap(host, tmp_path):
    server = host()
    urls = [f"{server.base}/gen/{220 + i}x160/{i}.jpg" for i in range(40)]
    one = searched_run(tmp_path / "one", urls)
    assert download(one, "--set", "download.urls_per_shard=5") == 0
    two = searched_run(tmp_path / "two", urls)
    assert download(two, "--set", "download.urls_per_shard=5", "--processes", "2") == 0
    assert _shard_files(one) == _shard_files(two)
    assert [r["image_id"] for r in stored(one)] == [r["image_id"] for r in stored(two)]
    per_url = [r["url"] for r in stored(two)]
    assert sorted(per_url) == sorted(urls)  # no gap, no overlap


@pytest.mark.slow
def test_two_ranks_take_alternate_shards_and_rank_0_merges(host, tmp_path):
    server = host(delay=0.02)
    urls = [f"{server.base}/gen/{240 + i}x180/{i}.jpg" for i in range(30)]
    run = searched_run(tmp_path / "run", urls)
    command = [sys.executable, "-m", "entitynet", "-q", "download", "--run", str(run.root), "--config", "demo", *LOOPBACK_ONLY,
               "--set", "download.urls_per_shard=5"]
    ranks = [subprocess.Popen(command, env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "ENTITYNET_RANK_WAIT": "60"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [process.communicate(timeout=120) for process in ranks]
    assert [process.returncode for process in ranks] == [0, 0], outputs
    assert "rank 0 merges" in outputs[1][0]
    assert json.loads(run.marker("download").read_text())["stats"]["stored"] == 30
    shards = {json.loads(p.read_text())["shard"] for p in run.path("images").glob("shard-*.json")}
    assert shards == set(range(6))
    assert sorted(r["url"] for r in stored(run)) == sorted(urls)


@pytest.mark.slow
def test_accelerate_launch_splits_the_shards_across_two_ranks(host, tmp_path):
    from helpers import accelerate_launch

    server = host()
    urls = [f"{server.base}/gen/{240 + i}x180/{i}.jpg" for i in range(20)]
    run = searched_run(tmp_path / "run", urls)
    done = accelerate_launch(["-m", "entitynet", "-q", "download", "--run", str(run.root), "--config", "demo",
                              *LOOPBACK_ONLY, "--set", "download.urls_per_shard=5"], seconds=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[:6000]
    assert "rank 0 merges" in done.stdout  # the other rank left the merge to rank 0
    assert json.loads(run.marker("download").read_text())["stats"]["stored"] == 20
    assert sorted(r["url"] for r in stored(run)) == sorted(urls)
