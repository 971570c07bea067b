"""Benchmark: our downloader against img2dataset, and against the bare image-processing limit.

A loopback nginx (keep-alive HTTP/1.1, as real image hosts; started and stopped by this script
from a config in the work folder) serves N generated JPEGs (1024x768 by default, or a mix of
640x480 to 2048x1536 with one in ten PNG). Then, each in its own process tree with the same
cores, for each shard size (S and 4 x S, to show memory does not grow with the shard):

- img2dataset (installed by this script into its own venv), resize to max side 512, keep ratio,
  only shrink, JPEG quality 90, parquet output;
- ``entitynet download`` with the same settings, writing its shards;
- the limit: PIL decode (draft) + resize + encode alone on the same files, no network.

Reported per round: images/s, CPU seconds per image (user+sys of the whole tree), peak RSS of the
whole tree (sampled from /proc every 50 ms), and the ratios. Targets (issue 12): >= 1.5x
img2dataset's images/s at no more peak RSS, at both shard sizes.

    apt-get install -y nginx                                          # once
    python benchmarks/download_vs_img2dataset.py                      # 600 images, shards of 75 and 300, 3 rounds
    python benchmarks/download_vs_img2dataset.py --images 2000 --image-size mixed --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

SIZES = [(640, 480), (800, 600), (1024, 768), (1280, 960), (1600, 1200), (2048, 1536)]
IMG2DATASET = "img2dataset==1.47.0"


def make_images(folder: Path, count: int, size: str) -> list[str]:
    rng = random.Random(4)
    names = []
    folder.mkdir(parents=True, exist_ok=True)
    fixed = None if size == "mixed" else tuple(int(side) for side in size.split("x"))
    for number in range(count):
        width, height = fixed or rng.choice(SIZES)
        image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(40):  # enough detail that JPEG sizes are photo-like, not flat
            x, y = rng.randrange(width), rng.randrange(height)
            draw.ellipse([x, y, x + rng.randrange(20, width // 3), y + rng.randrange(20, height // 3)],
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        image = image.filter(ImageFilter.GaussianBlur(1))
        noise = Image.effect_noise((width, height), 24).convert("RGB")
        image = Image.blend(image, noise, 0.15)
        name = f"{number:05d}.png" if number % 10 == 0 and not fixed else f"{number:05d}.jpg"
        image.save(folder / name, "PNG" if name.endswith(".png") else "JPEG", quality=88)
        names.append(name)
    return names


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TreeSampler:
    """Peak total RSS of a process and all its descendants, sampled from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        pids, stack = [], [self.pid]
        while stack:
            pid = stack.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    stack += [int(child) for child in (task / "children").read_text().split()]
                except OSError:
                    pass
        return pids

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self._tree():
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                except OSError:
                    pass
            self.peak_kb = max(self.peak_kb, total)
            self._stop.wait(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb


def measure(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, float]:
    before = os.times()
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(process.pid)
    _, error = process.communicate()
    seconds = time.perf_counter() - started
    peak = sampler.stop()
    after = os.times()
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{error[-3000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"seconds": seconds, "cpu": cpu, "peak_rss_mb": peak / 1024}


def count_ours(run: Path) -> int:
    return json.loads((run / "stages" / "download.json").read_text())["stats"]["stored"]


def count_img2dataset(output: Path) -> int:
    return sum(json.loads(p.read_text())["successes"] for p in output.glob("*_stats.json"))


LIMIT = """
import sys, io, os
from concurrent.futures import ProcessPoolExecutor
from PIL import Image
def one(path):
    with Image.open(path) as image:
        scale = 512 / max(image.size)
        if image.format == "JPEG" and scale < 1:  # as the downloader: decode at the target size's DCT scale
            image.draft("RGB", (round(image.size[0] * scale), round(image.size[1] * scale)))
        image = image.convert("RGB")
        scale = 512 / max(image.size)
        if scale < 1:
            image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.Resampling.LANCZOS, reducing_gap=3.0)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
    return len(buffer.getvalue())
if __name__ == "__main__":
    files = sorted(os.path.join(sys.argv[1], f) for f in os.listdir(sys.argv[1]))
    with ProcessPoolExecutor(int(sys.argv[2])) as pool:
        print(sum(1 for _ in pool.map(one, files, chunksize=16)))
"""


NGINX = """
worker_processes 1;
daemon off;
{user}
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    types {{ image/jpeg jpg; image/png png; }}
    client_body_temp_path {work}/nginx-tmp;
    proxy_temp_path {work}/nginx-tmp;
    fastcgi_temp_path {work}/nginx-tmp;
    uwsgi_temp_path {work}/nginx-tmp;
    scgi_temp_path {work}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        root {images};
    }}
}}
"""


def start_nginx(work: Path, images: Path, port: int) -> subprocess.Popen:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        sys.exit("nginx is not installed: apt-get install -y nginx (the benchmark serves the images with it)")
    (work / "nginx-tmp").mkdir(exist_ok=True)
    config = work / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the images in the work folder
    config.write_text(NGINX.format(user=user, work=work, images=images, port=port))
    server = subprocess.Popen([binary, "-c", str(config), "-p", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        if server.poll() is not None:
            sys.exit(f"nginx did not start: {server.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    server.kill()
    sys.exit("nginx did not start within 10 s")


def run_img2dataset(venv: Path, work: Path, urls: list[str], shard: int, args: argparse.Namespace) -> dict[str, float]:
    url_list = work / "urls.parquet"
    pq.write_table(pa.table({"url": urls, "caption": [f"image {i}" for i in range(len(urls))]}), url_list)
    out = work / "img2dataset-out"
    shutil.rmtree(out, ignore_errors=True)
    result = measure([
        str(venv / "bin" / "img2dataset"), "--url_list", str(url_list), "--input_format", "parquet",
        "--url_col", "url", "--caption_col", "caption", "--output_folder", str(out), "--output_format", "parquet",
        "--image_size", "512", "--resize_mode", "keep_ratio", "--resize_only_if_bigger", "True",
        "--encode_format", "jpg", "--encode_quality", "90", "--processes_count", str(args.processes),
        "--thread_count", str(args.threads), "--number_sample_per_shard", str(shard), "--disable_all_reencoding", "False",
        "--retries", "0", "--timeout", "20", "--enable_wandb", "False",
    ])
    result["stored"] = count_img2dataset(out)
    return result


def run_ours(work: Path, urls: list[str], shard: int, args: argparse.Namespace, source: str | None = None) -> dict[str, float]:
    """``source``: a folder holding another version's ``entitynet`` package (``baseline_source``), run
    in place of this one, for a before/after comparison."""
    from entitynet.rundir import RunDir
    from entitynet.tables import CANDIDATE_SCHEMA

    run = work / "entitynet-run"
    shutil.rmtree(run, ignore_errors=True)
    (run / "candidates").mkdir(parents=True)
    rows = [{"url": url, "query_id": "q", "engine": "pool", "rank": i, "text": f"image {i}"} for i, url in enumerate(urls)]
    pq.write_table(pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA), run / "candidates" / "part-00000.parquet")
    RunDir(run).run_stage("search", {"made": "by the benchmark"}, [], lambda: {})
    env = {**os.environ, "PYTHONPATH": source} if source else None
    result = measure([
        sys.executable, "-m", "entitynet", "-q", "download", "--run", str(run), "--config", "demo",
        "--processes", str(args.processes), "--set", f"download.threads={args.threads}",
        "--set", "download.allowed_networks=[127.0.0.1/32]", "--set", f"download.urls_per_shard={shard}",
        "--set", "download.max_side=512", "--set", "download.quality=90", "--set", "download.min_side=1",
        "--set", f"download.per_host={args.threads}", "--set", "download.dedup_distance=0",
    ], env=env, cwd=work)  # not from a checkout: `python -m` would import its entitynet/ before PYTHONPATH's
    result["stored"] = count_ours(run)
    return result


def baseline_source(revision: str, work: Path) -> str:
    """The ``entitynet`` package (with its ``configs``, which setup.cfg maps into it) of a git revision
    of this checkout, unpacked where PYTHONPATH can put it before the installed one."""
    folder = work / f"baseline-{revision}"
    if not (folder / "entitynet").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        repo = Path(__file__).resolve().parents[1]
        archive = subprocess.run(["git", "-C", str(repo), "archive", revision, "entitynet", "configs"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
        (folder / "configs").rename(folder / "entitynet" / "configs")
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--image-size", default="1024x768", help="WIDTHxHEIGHT of every image, or 'mixed'")
    parser.add_argument("--shard", type=int, default=75, help="shard size S; each round also runs 4 x S")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", help="folder to keep (images, venv); default: a temporary one")
    parser.add_argument("--baseline", metavar="REV", help="also run entitynet as of this git revision of the "
                        "checkout, reported as 'entitynet (baseline)'")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="download-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    images = work / f"images-{args.image_size}-{args.images}"
    names = sorted(p.name for p in images.glob("*")) if images.is_dir() else []
    if len(names) != args.images:
        shutil.rmtree(images, ignore_errors=True)
        print(f"generating {args.images} images ...", flush=True)
        names = make_images(images, args.images, args.image_size)
    venv = work / "img2dataset-venv"
    if not (venv / "bin" / "img2dataset").exists():
        print(f"installing {IMG2DATASET} into its own venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", IMG2DATASET], check=True)
    limit_script = work / "limit.py"
    limit_script.write_text(LIMIT)

    baseline = baseline_source(args.baseline, work) if args.baseline else None
    port = free_port()
    server = start_nginx(work, images, port)
    urls = [f"http://127.0.0.1:{port}/{name}" for name in names]
    shards = [args.shard, 4 * args.shard]
    rounds = []
    try:
        for number in range(1, args.rounds + 1):
            results = {}
            for shard in shards:  # interleaved, so drift in the machine's load hits both tools alike
                results[("img2dataset", shard)] = run_img2dataset(venv, work, urls, shard, args)
                results[("entitynet", shard)] = run_ours(work, urls, shard, args)
                if baseline:
                    results[("entitynet (baseline)", shard)] = run_ours(work, urls, shard, args, baseline)
            results[("limit (PIL only)", 0)] = measure([sys.executable, str(limit_script), str(images), str(args.processes)])
            results[("limit (PIL only)", 0)]["stored"] = len(names)
            rounds.append(results)
            report(number, results, shards, args, len(names))
    finally:
        server.terminate()
        server.wait(timeout=10)
    print("\nsummary over rounds (ours / img2dataset):")
    for shard in shards:
        speed = [r[("entitynet", shard)]["rate"] / r[("img2dataset", shard)]["rate"] for r in rounds]
        memory = [r[("entitynet", shard)]["peak_rss_mb"] / r[("img2dataset", shard)]["peak_rss_mb"] for r in rounds]
        print(f"  shards of {shard}: speed {', '.join(f'{v:.2f}x' for v in speed)} (target >= 1.5x); "
              f"peak RSS {', '.join(f'{v:.2f}x' for v in memory)} (target <= 1.0x)")
    growth = [r[("entitynet", shards[1])]["peak_rss_mb"] / r[("entitynet", shards[0])]["peak_rss_mb"] for r in rounds]
    print(f"  ours, peak RSS at {shards[1]} vs {shards[0]} per shard: {', '.join(f'{v:.2f}x' for v in growth)}")


def report(number: int, results: dict, shards: list[int], args: argparse.Namespace, count: int) -> None:
    print(f"\nround {number}: {count} images ({args.image_size}), {args.processes} processes x {args.threads} threads, "
          "max side 512, JPEG q90\n")
    print("| tool | shard | stored | seconds | images/s | CPU s per image | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for (name, shard), row in results.items():
        row["rate"] = row["stored"] / row["seconds"]
        print(f"| {name} | {shard or '-'} | {row['stored']} | {row['seconds']:.1f} | {row['rate']:.1f} | "
              f"{row['cpu'] / max(row['stored'], 1):.4f} | {row['peak_rss_mb']:.0f} |")
    limit = results[("limit (PIL only)", 0)]
    for shard in shards:
        ours, theirs = results[("entitynet", shard)], results[("img2dataset", shard)]
        speed, memory = ours["rate"] / theirs["rate"], ours["peak_rss_mb"] / theirs["peak_rss_mb"]
        print(f"shards of {shard}: {speed:.2f}x img2dataset's images/s, {memory:.2f}x its peak RSS, "
              f"{ours['rate'] / limit['rate']:.0%} of the PIL-only limit   {'OK' if speed >= 1.5 and memory <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
