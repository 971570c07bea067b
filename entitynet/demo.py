"""``entitynet demo``: ``entitynet run`` end to end, offline, on CPU, in about a minute and a half.

The bundled sample of Wikidata (and the real WordNet when it is installed) gives the entities;
the ``kg`` backends give natural types and attributes; queries follow. The web is replaced by a
demo image pool: for the most linked entities, the demo draws SYNTHETIC pictures whose look is a
deterministic function of the entity (colours from its id, shapes from its natural type,
textures from both) and writes an alt text for each; a loopback HTTP server it starts and stops
serves them, so the real search (``pool`` engine) and the real downloader run. Then the builder
makes both configurations and the card, and a tiny CLIP is trained on them and evaluated on
``test_seen`` (new pictures of trained entities: what it learnt) and ``test`` (entities it never
saw), each beside chance (when the ``train`` extra is installed). Nothing here is a photograph.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import random
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from entitynet import layout, pipeline, summary
from entitynet.config import Config, load_config
from entitynet.rundir import RunDir, StageResult, write_text_atomic
from entitynet.tables import read_entities, read_natural_types

logger = logging.getLogger(__name__)

SIZES = {
    # entities with pictures, pictures each, sources
    "small": (40, 3, ["wikidata"]),
    "full": (160, 3, ["wikidata", "wordnet"]),
}
# the tiny CLIP's training (trainer keys, on top of its `tiny` configuration)
TRAIN = {
    "small": ["max_steps=300", "batch_size=16", "log_every=100", "checkpoint_every=100"],
    "full": ["max_steps=500", "batch_size=32", "log_every=100", "checkpoint_every=250"],
}
EXPLANATION = """\
What the numbers mean: the pictures are SYNTHETIC drawings whose colours and texture are a
function of the entity, so a model can learn to tell entities it saw apart (seen_entities:
new pictures of entities it trained on, compared with chance), but nothing in a new entity's
name tells it what that entity's drawings look like (unseen_entities stays near chance). On
photographs, names and pictures share structure and the unseen score is the one that matters.
"""
CAPTIONS = ["Photo of a {}", "A {} up close", "{} in natural light", "Picture of a {}, side view",
            "A {} against a plain background", "{} seen from above", "{} outdoors", "Detail of a {}"]
DISTRACTORS = ["Sunset over the harbour", "Cup of coffee on a wooden table", "City skyline at night",
               "Snow on the mountain pass", "Empty train station platform", "Bowl of ramen"]


def draw(entity_id: str, natural_type: str, number: int, size: int = 384) -> bytes:
    """A synthetic picture of an entity: same entity, same palette and shapes; ``number`` varies the scene."""
    digest = hashlib.sha256(entity_id.encode()).digest()
    kind = int(hashlib.sha256(natural_type.encode()).hexdigest(), 16) % 3  # shapes follow the natural type
    rng = random.Random(f"{entity_id}|{number}")
    palette = [tuple(digest[i:i + 3]) for i in range(0, 15, 3)]
    image = Image.new("RGB", (size, size * 3 // 4), palette[0])
    canvas = ImageDraw.Draw(image)
    for stripe in range(0, image.width, 6 + digest[20] % 18):  # a texture of the entity's own
        canvas.line([(stripe, 0), (stripe + image.height, image.height)], fill=palette[1], width=1 + digest[21] % 3)
    for _ in range(5 + digest[22] % 5):
        x, y = rng.randrange(image.width), rng.randrange(image.height)
        r = rng.randrange(12, image.height // 3)
        box = [x - r, y - r, x + r, y + r]
        colour = palette[2 + rng.randrange(3)]
        if kind == 0:
            canvas.ellipse(box, fill=colour)
        elif kind == 1:
            canvas.rectangle(box, fill=colour)
        else:
            canvas.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class PictureServer(ThreadingHTTPServer):
    """Serves /<entity id>/<number>.jpg on 127.0.0.1 (drawn on request) until stopped."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, types: dict[str, str], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _PictureHandler)
        self.types = types
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> PictureServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _PictureHandler(BaseHTTPRequestHandler):
    server: PictureServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in self.server.types or not parts[1].endswith(".jpg"):
            self.send_error(404)
            return
        body = draw(parts[0], self.server.types[parts[0]], int(parts[1][:-4] or 0))
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _free_port(preferred: int | None) -> int:
    import socket

    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as probe:
            # as the server will: the last run's connections may still sit in TIME_WAIT on this port
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def write_pool(run: RunDir, port: int, count: int, per_entity: int) -> dict[str, str]:
    """The demo pool (JSON lines of url and alt text) for the most linked entities; returns
    entity id -> natural type, which the picture server draws from."""
    types = {n.entity_id: n.natural_type or "thing" for n in read_natural_types(run.path(layout.NATURAL_TYPES))}
    entities = sorted(read_entities(run.path(layout.ENTITIES)), key=lambda e: (-(e.sitelinks or 0), e.id))[:count]
    rng = random.Random(2505_02746)
    rows = []
    for entity in entities:
        for number in range(per_entity):
            caption = rng.choice(CAPTIONS).format(entity.name)
            rows.append({"url": f"http://127.0.0.1:{port}/{entity.id}/{number}.jpg", "text": caption})
    for number, caption in enumerate(DISTRACTORS):
        rows.append({"url": f"http://127.0.0.1:{port}/none/{number}.jpg", "text": caption})
    pool = run.path(layout.DEMO_POOL)
    write_text_atomic(pool, "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n")
    return {"none": "scenery", **{e.id: types.get(e.id, "thing") for e in entities}}


def demo_config(run: RunDir, size: str, port: int, train: bool = True, seed: int = 0) -> Config:
    count, per_entity, sources = SIZES[size]
    if "wordnet" in sources:
        from entitynet.kg.wordnet import WordNetMissing, load_wordnet

        try:
            load_wordnet()
        except WordNetMissing:
            logger.warning("WordNet is not installed: the demo harvests Wikidata only (see README to add WordNet)")
            sources = ["wikidata"]
    if train and not train_extra_installed():
        logger.warning("the demo trains no model: the train extra is not installed (pip install 'entitynet[train]')")
        train = False
    return load_config("demo", assignments=[
        f"kg.sources=[{', '.join(sources)}]",
        f"search.pool.path={run.path(layout.DEMO_POOL)}",
        "search.engine=pool",
        "download.allowed_networks=[127.0.0.1/32]",
        "download.urls_per_shard=100",
        "download.threads=8",
        "build.repo_id=entitynet/livingthings-demo",
        "build.pretty_name=LivingThings (demo, synthetic images)",
        "build.sample_images=12",
        "build.validation_fraction=0.2",  # few entities: larger held-out fractions so no split is empty
        "build.test_fraction=0.2",
        f"train.enabled={str(train).lower()}",
        *[f"train.{setting}" for setting in [*TRAIN[size], f"seed={seed}"]],
        "eval.max_images=1000",
    ])


def train_extra_installed() -> bool:
    """Whether the train extra imports (torch, transformers, accelerate and the trainer itself)."""
    try:
        importlib.import_module("entitynet.training.train")
    except ImportError:
        return False
    return True


def run_demo(out: Path, size: str = "full", force: bool = False,
             report: Callable[[pipeline.Stage, StageResult], None] | None = None, train: bool = True,
             seed: int = 0) -> dict[str, Any]:
    """Run every stage into ``out``, the pool's picture server running for search and download;
    returns the run's summary (also written to RUN/summary.json)."""
    run = RunDir(out)
    marker = run.path(layout.DEMO_MARKER)
    known: dict[str, Any] = json.loads(marker.read_text()) if marker.exists() else {}
    port = _free_port(known.get("port"))  # the same port as last time keeps the candidates' URLs stable
    if known and known.get("size") != size:
        force = True  # another size is another configuration: redo everything rather than refuse
    elif known.get("port") not in (None, port):  # the pool's URLs change: search again from there on
        for entry in pipeline.stages(first="search"):
            run.reset(entry.name)
    write_text_atomic(marker, json.dumps({
        "port": port, "size": size, "seed": seed,
        "note": "made by `entitynet demo`: the images are synthetic drawings, not photographs",
    }, indent=2) + "\n")
    config = demo_config(run, size, port, train, seed)
    if force:  # forgotten at once, so an interrupted --force finishes its redo when rerun without it
        pipeline.forget(config, run, [entry for entry in pipeline.STAGES if entry.enabled(config)])
    count, per_entity, _ = SIZES[size]
    results: dict[str, StageResult] = {}

    def told(entry: pipeline.Stage, result: StageResult) -> None:
        results[entry.name] = result
        if report:
            report(entry, result)

    pipeline.run_stages(config, run, pipeline.stages(last="queries"), force, told)
    types = write_pool(run, port, count, per_entity)
    with PictureServer(types, port):  # search and download fetch from it
        pipeline.run_stages(config, run, pipeline.stages("search", "download"), force, told)
    pipeline.run_stages(config, run, pipeline.stages("build", "build"), force, told)
    retrain = force or known.get("seed", 0) != seed  # another training seed: the same dataset, a new model
    pipeline.run_stages(config, run, pipeline.stages(first="train"), retrain, told)
    return summary.write(config, run, results)
