"""Benchmark: our downloader against img2dataset, and against the bare image-processing limit.

One loopback HTTP server (python -m http.server, its own process) serves N generated images of
realistic sizes (640x480 to 2048x1536 JPEGs, one in ten PNG). Then, each in its own process tree
with the same cores:

- img2dataset (installed by this script into its own venv), resize to max side 512, keep ratio,
  only shrink, JPEG quality 90, parquet output;
- ``entitynet download`` with the same settings, writing its shards;
- the limit: PIL decode (draft) + resize + encode alone on the same files, no network.

Reported: images/s, CPU seconds per image (user+sys of the whole tree), peak RSS of the whole
tree (sampled from /proc every 50 ms). Targets (issue 4): >= 1.0x img2dataset's images/s at no
more memory, and >= 70% of the limit's images/s.

    python benchmarks/download_vs_img2dataset.py               # 2000 images, 2 processes
    python benchmarks/download_vs_img2dataset.py --images 300  # quicker
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


def make_images(folder: Path, count: int) -> list[str]:
    rng = random.Random(4)
    names = []
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        width, height = rng.choice(SIZES)
        image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(40):  # enough detail that JPEG sizes are photo-like, not flat
            x, y = rng.randrange(width), rng.randrange(height)
            draw.ellipse([x, y, x + rng.randrange(20, width // 3), y + rng.randrange(20, height // 3)],
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        image = image.filter(ImageFilter.GaussianBlur(1))
        noise = Image.effect_noise((width, height), 24).convert("RGB")
        image = Image.blend(image, noise, 0.15)
        name = f"{number:05d}.png" if number % 10 == 0 else f"{number:05d}.jpg"
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
        if image.format == "JPEG":
            image.draft("RGB", (512, 512))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--work", help="folder to keep (images, venv); default: a temporary one")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="download-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    images = work / "images"
    names = sorted(p.name for p in images.glob("*")) if images.is_dir() else []
    if len(names) != args.images:
        shutil.rmtree(images, ignore_errors=True)
        print(f"generating {args.images} images ...", flush=True)
        names = make_images(images, args.images)
    venv = work / "img2dataset-venv"
    if not (venv / "bin" / "img2dataset").exists():
        print(f"installing {IMG2DATASET} into its own venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", IMG2DATASET], check=True)

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(images)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    urls = [f"http://127.0.0.1:{port}/{name}" for name in names]
    try:
        results = {}
        # img2dataset
        url_list = work / "urls.parquet"
        pq.write_table(pa.table({"url": urls, "caption": [f"image {i}" for i in range(len(urls))]}), url_list)
        out = work / "img2dataset-out"
        shutil.rmtree(out, ignore_errors=True)
        results["img2dataset"] = measure([
            str(venv / "bin" / "img2dataset"), "--url_list", str(url_list), "--input_format", "parquet",
            "--url_col", "url", "--caption_col", "caption", "--output_folder", str(out), "--output_format", "parquet",
            "--image_size", "512", "--resize_mode", "keep_ratio", "--resize_only_if_bigger", "True",
            "--encode_format", "jpg", "--encode_quality", "90", "--processes_count", str(args.processes),
            "--thread_count", str(args.threads), "--number_sample_per_shard", "250", "--disable_all_reencoding", "False",
            "--retries", "0", "--timeout", "20", "--enable_wandb", "False",
        ])
        results["img2dataset"]["stored"] = count_img2dataset(out)
        # ours
        from entitynet.rundir import RunDir
        from entitynet.tables import CANDIDATE_SCHEMA

        run = work / "entitynet-run"
        shutil.rmtree(run, ignore_errors=True)
        (run / "candidates").mkdir(parents=True)
        rows = [{"url": url, "query_id": "q", "engine": "pool", "rank": i, "text": f"image {i}"} for i, url in enumerate(urls)]
        pq.write_table(pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA), run / "candidates" / "part-00000.parquet")
        RunDir(run).run_stage("search", {"made": "by the benchmark"}, [], lambda: {})
        results["entitynet"] = measure([
            sys.executable, "-m", "entitynet", "-q", "download", "--run", str(run), "--config", "demo",
            "--processes", str(args.processes), "--set", f"download.threads={args.threads}",
            "--set", "download.allowed_networks=[127.0.0.1/32]", "--set", "download.urls_per_shard=250",
            "--set", "download.max_side=512", "--set", "download.quality=90", "--set", "download.min_side=1",
            "--set", "download.per_host=" + str(args.threads), "--set", "download.dedup_distance=0",
        ])
        results["entitynet"]["stored"] = count_ours(run)
        # the limit
        limit_script = work / "limit.py"
        limit_script.write_text(LIMIT)
        results["limit (PIL only)"] = measure([sys.executable, str(limit_script), str(images), str(args.processes)])
        results["limit (PIL only)"]["stored"] = len(names)
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"\n{len(names)} images, {args.processes} processes x {args.threads} threads, max side 512, JPEG q90\n")
    print("| tool | stored | seconds | images/s | CPU s per image | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for name, row in results.items():
        row["rate"] = row["stored"] / row["seconds"]
        print(f"| {name} | {row['stored']} | {row['seconds']:.1f} | {row['rate']:.1f} | {row['cpu'] / max(row['stored'], 1):.4f} | {row['peak_rss_mb']:.0f} |")
    ours, theirs, limit = results["entitynet"], results["img2dataset"], results["limit (PIL only)"]
    speed = ours["rate"] / theirs["rate"]
    memory = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
    share = ours["rate"] / limit["rate"]
    print(f"\nvs img2dataset: {speed:.2f}x images/s (target >= 1.0x), {memory:.2f}x peak RSS (target <= 1.0x)   "
          f"{'OK' if speed >= 1.0 and memory <= 1.0 else 'MISSED'}")
    print(f"vs the PIL-only limit: {share:.0%} (target >= 70%)   {'OK' if share >= 0.7 else 'MISSED'}")


if __name__ == "__main__":
    main()
