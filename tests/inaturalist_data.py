"""A small iNaturalist open-data metadata set in the published format, and a loopback photo host.

Tab-separated, gzip-compressed, unquoted text (one taxon name holds both kinds of quote), the
columns of inaturalist-open-data's Metadata/README.md plus observations' newer ``anomaly_score``.
The taxa match the packaged sample graph: by P3151 (lion, tiger, house cat, dog) and by name and
rank (Panthera pardus, Canis lupus, the genus Panthera, the family Felidae); Panthera uncia and
Puma concolor are not in the graph, so their photos go to the genus and the family; "Pyrus" is an active
genus twice (an ambiguous name); "Canis lupus" also has an inactive twin that must not count.
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from image_host import picture

LIFE = "48460"
CATS = f"{LIFE}/1/2/40151/41573/41636"
TAXA = [  # taxon_id, ancestry, rank_level, rank, name, active
    (48460, "", 100, "stateofmatter", "Life", "true"),
    (1, LIFE, 70, "kingdom", "Animalia", "true"),
    (2, f"{LIFE}/1", 60, "phylum", "Chordata", "true"),
    (40151, f"{LIFE}/1/2", 50, "class", "Mammalia", "true"),
    (41573, f"{LIFE}/1/2/40151", 40, "order", "Carnivora", "true"),
    (41636, f"{LIFE}/1/2/40151/41573", 30, "family", "Felidae", "true"),
    (41944, CATS, 20, "genus", "Panthera", "true"),
    (41964, f"{CATS}/41944", 10, "species", "Panthera leo", "true"),
    (41967, f"{CATS}/41944", 10, "species", "Panthera tigris", "true"),
    (41963, f"{CATS}/41944", 10, "species", "Panthera pardus", "true"),
    (41970, f"{CATS}/41944", 10, "species", "Panthera uncia", "true"),  # not in the sample graph
    (42007, f"{CATS}/71306", 10, "species", "Puma concolor", "true"),  # nor this (71306: an absent genus)
    (999002, f"{CATS}/41944/41964", 5, "subspecies", 'Panthera leo "persica" d\'Asie', "false"),
    (118551, CATS, 20, "genus", "Felis", "true"),
    (118552, f"{CATS}/118551", 10, "species", "Felis catus", "true"),
    (42044, f"{LIFE}/1/2/40151/41573", 30, "family", "Canidae", "true"),
    (42043, f"{LIFE}/1/2/40151/41573/42044", 20, "genus", "Canis", "true"),
    (42048, f"{LIFE}/1/2/40151/41573/42044/42043", 10, "species", "Canis lupus", "true"),
    (999003, f"{LIFE}/1/2/40151/41573/42044/42043", 10, "species", "Canis lupus", "false"),
    (47144, f"{LIFE}/1/2/40151/41573/42044/42043/42048", 5, "subspecies", "Canis lupus familiaris", "true"),
    (47126, LIFE, 70, "kingdom", "Plantae", "true"),
    (47743, f"{LIFE}/47126", 20, "genus", "Pyrus", "true"),
    (999001, f"{LIFE}/47126", 20, "genus", "Pyrus", "true"),
]
OBSERVERS = [(1, "ana_l", "Ana Lima"), (2, "bo", ""), (3, "chen.w", "Chen Wei")]
# observation uuid -> (observer, taxon, quality grade, observed on)
OBSERVATIONS = {
    "0b1e-lion-1": (1, 41964, "research", "2021-05-01"),
    "0b1e-lion-2": (2, 41964, "research", "2022-06-02"),
    "0b1e-lion-3": (1, 41964, "needs_id", "2023-07-03"),
    "0b1e-lion-4": (3, 41964, "casual", "2023-07-04"),
    "0b1e-tiger-1": (3, 41967, "research", "2020-01-05"),
    "0b1e-leopard-1": (1, 41963, "research", "2019-02-06"),
    "0b1e-ounce-1": (2, 41970, "research", "2019-02-07"),
    "0b1e-puma-1": (3, 42007, "research", "2019-02-08"),
    "0b1e-cat-1": (2, 118552, "research", "2018-03-07"),
    "0b1e-cat-2": (3, 118552, "research", "2018-03-08"),
    "0b1e-dog-1": (1, 47144, "research", "2017-04-09"),
    "0b1e-wolf-1": (2, 42048, "research", "2016-05-10"),
}
# photo id -> (observation, licence, position, extension)
PHOTOS = {
    101: ("0b1e-lion-1", "CC-BY", 0, "jpg"),
    102: ("0b1e-lion-1", "CC-BY-NC", 1, "jpg"),
    103: ("0b1e-lion-2", "CC0", 0, "jpeg"),
    104: ("0b1e-lion-3", "CC-BY-SA", 0, "jpg"),
    105: ("0b1e-lion-4", "CC-BY", 0, "jpg"),
    106: ("0b1e-tiger-1", "CC-BY-SA", 0, "jpg"),
    107: ("0b1e-tiger-1", "CC-BY-ND", 1, "jpg"),
    108: ("0b1e-tiger-1", "CC-BY-NC-SA", 2, "jpg"),
    109: ("0b1e-tiger-1", "CC-BY-NC-ND", 3, "jpg"),
    110: ("0b1e-leopard-1", "CC-BY", 0, "jpg"),
    111: ("0b1e-cat-1", "CC0", 0, "png"),
    112: ("0b1e-cat-2", "CC-BY", 0, "jpg"),
    113: ("0b1e-dog-1", "CC-BY", 0, "jpg"),
    114: ("0b1e-wolf-1", "CC0", 0, "jpg"),
    115: ("0b1e-ounce-1", "CC-BY", 0, "jpg"),
    116: ("0b1e-puma-1", "CC-BY-SA", 0, "jpg"),
}
# What the default settings keep (research grade; CC0, CC-BY, CC-BY-SA), per sample entity.
KEPT = {
    "Q140": {101, 103},  # lion, by P3151
    "Q19939": {106},  # tiger, by P3151
    "Q146": {111, 112},  # house cat, by P3151
    "Q144": {113},  # dog, by P3151
    "Q127960": {115},  # the genus Panthera, by name: the species it has that the graph has not
    "Q25265": {116},  # the family Felidae, likewise
}


def write_metadata(folder: Path, photos: dict[int, tuple[str, str, int, str]] | None = None,
                   observation_header: list[str] | None = None) -> Path:
    """The four .csv.gz files in ``folder``; ``photos`` and ``observation_header`` override the defaults."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "taxa.csv.gz", ["taxon_id", "ancestry", "rank_level", "rank", "name", "active"], TAXA)
    observation_rows = [
        (uuid, observer, "-1.28", "36.82", "10", taxon, grade, day, "0.01")
        for uuid, (observer, taxon, grade, day) in OBSERVATIONS.items()
    ]
    _write(folder / "observations.csv.gz", observation_header or [
        "observation_uuid", "observer_id", "latitude", "longitude", "positional_accuracy", "taxon_id",
        "quality_grade", "observed_on", "anomaly_score"], observation_rows)
    photo_rows = [
        (f"uuid-{photo_id}", photo_id, observation, OBSERVATIONS[observation][0], extension, licence, 2048, 1536, position)
        for photo_id, (observation, licence, position, extension) in (photos or PHOTOS).items()
    ]
    _write(folder / "photos.csv.gz", ["photo_uuid", "photo_id", "observation_uuid", "observer_id", "extension", "license",
                                      "width", "height", "position"], photo_rows)
    _write(folder / "observers.csv.gz", ["observer_id", "login", "name"], OBSERVERS)
    return folder


def _write(path: Path, header: list[str], rows: list[tuple]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(value) for value in row) for row in rows]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))


class PhotoHost(ThreadingHTTPServer):
    """Serves /photos/<photo_id>/<size>.<extension> (a generated picture) and /metadata/<file> from a folder."""

    daemon_threads = True

    def __init__(self, metadata: Path | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _PhotoHandler)
        self.metadata = metadata
        self.requests: list[str] = []
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self.photo_url = self.base + "/photos/{photo_id}/{size}.{extension}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _PhotoHandler(BaseHTTPRequestHandler):
    server: PhotoHost

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "photos" and parts[1].isdigit():
            fmt = "PNG" if parts[2].endswith(".png") else "JPEG"
            body, kind = picture(200, 150, int(parts[1]), fmt), "image/png" if fmt == "PNG" else "image/jpeg"
        elif len(parts) == 2 and parts[0] == "metadata" and self.server.metadata and (self.server.metadata / parts[1]).is_file():
            body, kind = (self.server.metadata / parts[1]).read_bytes(), "application/gzip"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
