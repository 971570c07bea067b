"""`entitynet import`: a small release in the authors' exact layout (images on a loopback host,
some first links dead, one row with no working link) imported, downloaded, built and loaded with
the real load_dataset; plain URL lists; bad sources; kill -9; runs an import must not mix with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_host import ImageHost

from entitynet.cli import main
from entitynet.rundir import RunDir

LOOPBACK_ONLY = ["--set", "download.allowed_networks=[127.0.0.1/32]", "--set", "download.min_side=16",
                 "--set", "download.read_timeout=2.0", "--set", "download.max_attempts=1"]

# entity -> (name, [(text, source)], natural entity): the release's textvalues/textsources pairs.
ENTITIES = {
    "Q140": ("lion", [("lion", "name"), ("king of beasts", "aliases"), ("African lion", "common_names"),
                      ("Panthera leo", "taxon_names"), ("large cat of the genus Panthera", "description")], "Q729"),
    "Q729": ("animal", [("animal", "name"), ("beast", "aliases"), ("multicellular eukaryotic organism", "description")], "Q729"),
    "wordnet:oak.n.02": ("oak", [("oak", "name"), ("oak tree", "aliases"), ("a tree of the genus Quercus", "type_description")],
                         "wordnet:plant.n.02"),
    "wordnet:plant.n.02": ("plant", [("plant", "name"), ("flora", "aliases"), ("an organism lacking locomotion", "description")],
                           "wordnet:plant.n.02"),
    "Q25294": ("hammer", [("hammer", "name"), ("claw hammer", "aliases"), ("a tool with a heavy head", "description")], "Q39546"),
    "Q39546": ("tool", [("tool", "name"), ("implement", "aliases"), ("a device that makes work easier", "description")], "Q39546"),
    # fungi: queried as living things, but their natural entity is none of the authors' living ones
    "Q43200": ("fly agaric", [("fly agaric", "name"), ("Amanita muscaria", "taxon_names")], "Q764"),
    "Q764": ("fungus", [("fungus", "name")], "Q764"),
}
# query hash -> (query, query_type, entity, attribute, api)
QUERIES = {
    "qhLion": ("lion", "wd-noun-living", "Q140", None, "bing"),
    "qhManedLion": ("maned lion", "wd-attrnoun-living", "Q140", "maned", "google"),
    "qhManedAnimal": ("maned animal", "wd-attr-living", "Q140", "maned", "bing"),
    "qhOak": ("oak", "wordnet-noun-living", "wordnet:oak.n.02", None, "bing"),
    "qhHammer": ("hammer", "wd-noun-world", "Q25294", None, "bing"),
    "qhClawHammer": ("claw hammer", "wd-attrnoun-world", "Q25294", "claw", "google"),
    "qhFlyAgaric": ("fly agaric", "wd-noun-living", "Q43200", None, "bing"),
}


def row(key: str, qh: list[str], texts: list[str], links: list[str]) -> dict:
    return {"key": key, "qh": qh, "texts": texts, "images_link": links,
            "images_contextlink": [f"https://pages.example/{key}/{i}" for i in range(len(links))],
            "images_width": [200] * len(links), "images_height": [150] * len(links)}


def release_rows(base: str) -> dict[str, list[list[dict]]]:
    """Split -> files -> rows. ``/fault/404/...`` is dead, ``/fault/html/...`` is not an image."""
    def gen(seed: int) -> str:
        return f"{base}/gen/200x150/{seed}.jpg"

    return {
        "val": [[
            row("val000000000", ["qhLion", "qhManedLion"], ["a lion resting", "lion photo"], [gen(1)]),
            row("val000000001", ["qhOak"], ["an old oak"], [f"{base}/fault/404/oak", gen(2)]),  # first link dead
            row("val000000002", ["qhHammer"], ["hammer on a bench"], [f"{base}/fault/404/h", f"{base}/fault/html/h"]),  # none works
        ]],
        "test": [[
            row("test000000000", ["qhClawHammer"], ["claw hammer"], [gen(3), gen(4)]),  # first works: the second is never fetched
            row("test000000001", ["qhManedAnimal"], [], [f"{base}/fault/404/m", gen(5)]),
        ]],
        "train": [
            [row("train000000000", ["qhLion"], ["lion at dusk"], [gen(6)]),
             row("train000000001", ["qhOak", "qhLion"], ["oak and lion", "a tree", "a cat"], [f"{base}/fault/404/t", gen(7)]),
             row("train000000002", ["qhHammer"], ["a hammer"], [gen(8)])],
            [row("train000000003", ["qhClawHammer"], ["tools"], [gen(9)])],
        ],
        "minitrain": [[row("minitrain000000000", ["qhLion"], ["lion at dusk"], [gen(6)])]],  # also in train
    }


def write_release(folder: Path, base: str, rows_per_group: int = 2,
                  splits: dict[str, list[list[dict]]] | None = None) -> dict[str, list[list[dict]]]:
    """A release in the authors' layout: images_metadata/{split}-NNNNN-of-MMMMM.parquet + the two tables."""
    splits = splits or release_rows(base)
    (folder / "images_metadata").mkdir(parents=True)
    for split, files in splits.items():
        for number, rows in enumerate(files):
            path = folder / "images_metadata" / f"{split}-{number:05d}-of-{len(files):05d}.parquet"
            pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=rows_per_group)
    pq.write_table(pa.Table.from_pylist([
        {"entity": entity, "entity_name": name, "textvalues": [t for t, _ in texts], "textsources": [s for _, s in texts],
         "naturalentity": natural} for entity, (name, texts, natural) in ENTITIES.items()]), folder / "entitynet-entities.parquet")
    pq.write_table(pa.Table.from_pylist([
        {"query_hash": qh, "query": query, "query_type": kind, "entity": entity, "attribute": attribute, "api": api}
        for qh, (query, kind, entity, attribute, api) in QUERIES.items()]), folder / "entitynet-queries.parquet")
    return splits


@pytest.fixture(scope="module")
def host():
    server = ImageHost()
    yield server
    server.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory, host):
    """The release imported (row groups of 2, parts of 3 rows), downloaded and built."""
    root = tmp_path_factory.mktemp("import")
    splits = write_release(root / "entitynet", host.base)
    run = root / "run"
    assert main(["-q", "import", "--from", str(root / "entitynet"), "--run", str(run), "--rows-per-part", "3"]) == 0
    assert main(["-q", "download", "--run", str(run), *LOOPBACK_ONLY]) == 0
    assert main(["-q", "build", "--run", str(run), "--domain", "entitynet"]) == 0
    return RunDir(run), splits


def rows_of(run: RunDir, config: str = "entitynet") -> dict[str, list[dict]]:
    # A cache of the run's own: datasets keys a local folder's cache by its card and data file
    # names, not their contents, so another session's build of the same shape would be read back.
    loaded = datasets.load_dataset(str(run.path("dataset")), config, cache_dir=str(run.path("hf-datasets-cache")))
    return {split: list(loaded[split]) for split in loaded}


def by_first_url(rows: dict[str, list[dict]]) -> dict[str, tuple[str, dict]]:
    return {row["urls"][0]: (split, row) for split, found in rows.items() for row in found}


def imported_and_built(tmp_path: Path, base: str, splits: dict) -> dict[str, tuple[str, dict]]:
    """A release of ``splits`` imported, downloaded from the loopback host and built: its rows by first URL."""
    write_release(tmp_path / "release", base, splits=splits)
    run = RunDir(tmp_path / "run")
    assert main(["-q", "import", "--from", str(tmp_path / "release"), "--run", str(run.root)]) == 0
    assert main(["-q", "download", "--run", str(run.root), *LOOPBACK_ONLY]) == 0
    assert main(["-q", "build", "--run", str(run.root), "--domain", "entitynet"]) == 0
    return by_first_url(rows_of(run))


def released(splits: dict) -> list[tuple[str, dict]]:
    return [(split, row) for split, files in splits.items() for rows in files for row in rows]


def test_rows_splits_alt_texts_and_entities_are_the_releases(built):
    run, splits = built
    rows = by_first_url(rows_of(run))
    ours = {"train": "train", "minitrain": "train", "val": "validation", "test": "test"}
    expected: dict[str, list[tuple[str, dict]]] = {}
    for split, row in released(splits):
        working = [link for link in row["images_link"] if "/gen/" in link]
        if working:
            expected.setdefault(working[0], []).append((ours[split], row))
    assert set(rows) == set(expected)  # one row per released image with a working link
    assert sum(len(found) > 1 for found in expected.values()) == 1  # minitrain's copy of a train image: merged
    for url, found in expected.items():
        got_split, got = rows[url]
        (split, row), pages = found[0], {page for _, copy in found for page in copy["images_contextlink"]}
        assert got_split == split
        assert got["alt_texts"] == row["texts"]
        assert {q["text"] for q in got["queries"]} == {QUERIES[qh][0] for qh in row["qh"]}
        assert {e["id"]: e["name"] for e in got["entities"]} == {QUERIES[qh][2]: ENTITIES[QUERIES[qh][2]][0] for qh in row["qh"]}
        assert got["urls"] == [url] + [link for link in row["images_link"] if link != url]  # the working link first
        assert set(got["page_urls"]) == pages


def test_entities_carry_their_texts_natural_types_and_domains(built):
    run, _ = built
    entities = {e["id"]: e for found in rows_of(run).values() for row in found for e in row["entities"]}
    lion, oak, hammer = entities["Q140"], entities["wordnet:oak.n.02"], entities["Q25294"]
    assert lion["aliases"] == ["king of beasts"] and lion["common_names"] == ["African lion"]
    assert lion["taxon_name"] == "Panthera leo" and lion["description"] == "large cat of the genus Panthera"
    assert (lion["natural_type"], lion["natural_type_aliases"], lion["natural_type_description"]) == (
        "animal", ["beast"], "multicellular eukaryotic organism")
    assert oak["description"] == "a tree of the genus Quercus"  # a type_description, the only description it has
    assert (oak["natural_type"], oak["natural_type_aliases"]) == ("plant", ["flora"])
    assert (lion["domain"], oak["domain"], hammer["domain"]) == ("living", "living", "other")
    assert hammer["natural_type"] == "tool" and hammer["natural_type_description"] == "a device that makes work easier"


def test_query_kinds_attributes_and_engines_follow_the_release(built):
    run, _ = built
    rows = by_first_url(rows_of(run))
    lion = next(row for _, row in rows.values() if row["alt_texts"] == ["a lion resting", "lion photo"])
    assert {(q["text"], q["kind"], q["attribute"]) for q in lion["queries"]} == {
        ("lion", "noun", None), ("maned lion", "attrnoun", "maned")}
    assert set(lion["engines"]) == {"bing", "google"}
    maned = next(row for _, row in rows.values() if row["queries"][0]["text"] == "maned animal")
    assert (maned["queries"][0]["kind"], maned["queries"][0]["attribute"]) == ("attr", "maned")
    oak = next(row for _, row in rows.values() if row["alt_texts"] == ["an old oak"])
    assert oak["queries"][0]["kind"] == "wordnet-noun"


def test_livingthings_holds_the_living_rows_only(built):
    run, _ = built
    living = [row for found in rows_of(run, "livingthings").values() for row in found]
    assert living and all(row["domain"] == "living" for row in living)
    assert not any(e["id"] == "Q25294" for row in living for e in row["entities"])


def test_a_row_whose_every_link_fails_is_one_failure_with_each_links_reason(built, host):
    run, _ = built
    failures = pq.read_table(run.path("images") / "failures.parquet").to_pylist()
    assert [f["url"] for f in failures] == [f"{host.base}/fault/404/h"]  # under its first link
    failure = failures[0]
    assert failure["reason"] == "http_404" and not failure["transient"]
    assert "link 1/2" in failure["detail"] and "http_404" in failure["detail"] and "link 2/2" in failure["detail"]
    assert "not_image" in failure["detail"]
    download = json.loads(run.marker("download").read_text())["stats"]
    imported = json.loads(run.marker("import").read_text())["stats"]
    assert download["urls"] == download["stored"] + download["failed"]
    assert download["failed"] == 1 and download["reasons"] == {"http_404": 1}
    assert imported["rows"] == 10 and imported["rows_with_alternatives"] == 5
    assert imported["rows_per_split"] == {"val": 3, "test": 2, "train": 4, "minitrain": 1}
    assert imported["entities_per_domain"] == {"living": 4, "other": 4} and imported["living_queries_of_other_entities"] == 1


def test_a_working_first_link_means_the_alternatives_are_never_fetched(built, host):
    assert host.hits["/gen/200x150/3.jpg"] == 1 and host.hits["/gen/200x150/4.jpg"] == 0
    assert host.hits["/fault/404/oak"] == 1 and host.hits["/gen/200x150/2.jpg"] == 1


def test_rows_sharing_a_dead_first_link_are_each_tried_down_their_own_links(tmp_path, host):
    """Before, rows were grouped by their first link and the first row's alternatives were tried
    for all: the test row whose every link is dead lent its alt text to the validation row's
    image, pulled it into test, and was no failure."""
    base = host.base
    dead, other_dead, also_dead = f"{base}/fault/404/shared-a", f"{base}/fault/404/own-b", f"{base}/fault/404/shared-c"

    def gen(seed: int) -> str:
        return f"{base}/gen/200x150/{100 + seed}.jpg"

    splits = {
        "val": [[row("val000000000", ["qhOak"], ["validation oak"], [dead, gen(1)]),
                 row("val000000001", ["qhHammer"], ["shared q"], [gen(4), gen(6)])]],
        "test": [[row("test000000000", ["qhHammer"], ["test hammer"], [dead, other_dead]),  # every link dead
                  row("test000000001", ["qhFlyAgaric"], ["agaric"], [gen(7)])]],
        "train": [[row("train000000000", ["qhLion"], ["lion x"], [also_dead, gen(2)]),
                   row("train000000001", ["qhClawHammer"], ["claw y"], [also_dead, gen(3)]),
                   row("train000000002", ["qhLion"], ["shared p"], [gen(4), gen(5)])]],
    }
    rows = imported_and_built(tmp_path, base, splits)
    run = RunDir(tmp_path / "run")
    assert {url: (split, row["alt_texts"]) for url, (split, row) in rows.items()} == {
        gen(1): ("validation", ["validation oak"]),  # not "test hammer", and not moved to test
        gen(2): ("train", ["lion x"]), gen(3): ("train", ["claw y"]),  # each row its own second link
        gen(4): ("validation", ["shared p", "shared q"]),  # both rows reached their shared first link
        gen(7): ("test", ["agaric"]),
    }
    assert rows[gen(1)][1]["urls"] == [gen(1), dead] and rows[gen(2)][1]["urls"] == [gen(2), also_dead]
    failures = pq.read_table(run.path("images") / "failures.parquet").to_pylist()
    assert [(f["url"], f["reason"]) for f in failures] == [(dead, "http_404")]  # the test row: a failure of its own
    assert "link 2/2" in failures[0]["detail"] and "own-b" in failures[0]["detail"]
    stats = json.loads(run.marker("download").read_text())["stats"]
    assert (stats["failed"], stats["reasons"]) == (1, {"http_404": 1})
    assert host.hits["/fault/404/shared-a"] == 1 and host.hits["/fault/404/shared-c"] == 1  # once per link
    assert host.hits[f"/gen/200x150/{105}.jpg"] == 0 and host.hits[f"/gen/200x150/{106}.jpg"] == 0


def test_an_image_two_rows_reach_by_different_chains_is_one_row_with_both_texts(tmp_path, host):
    """One row reaches a link through its dead first link, another row names it first: the link is
    stored twice under one URL, and the build took both copies for duplicates and dropped them."""
    base, picture_url = host.base, f"{host.base}/gen/200x150/131.jpg"
    splits = {"val": [[row("val000000000", ["qhOak"], ["through a dead link"], [f"{base}/fault/404/before-131", picture_url])]],
              "train": [[row("train000000000", ["qhLion"], ["first link"], [picture_url]),
                         row("train000000001", ["qhHammer"], ["a hammer"], [f"{base}/gen/200x150/132.jpg"])]]}
    rows = imported_and_built(tmp_path, base, splits)
    run = RunDir(tmp_path / "run")
    assert picture_url in rows, "the image both rows reached was dropped"
    split, found = rows[picture_url]
    assert (split, sorted(found["alt_texts"])) == ("validation", ["first link", "through a dead link"])
    assert found["urls"] == [picture_url, f"{base}/fault/404/before-131"]
    build = json.loads(run.marker("build").read_text())["stats"]
    assert (build["rows"], build["merged_duplicates"]) == (2, 1)


def test_retrying_a_chain_that_failed_does_not_store_its_neighbours_image_twice(tmp_path, host):
    """Two rows share a first link that fails transiently; --retry-failures redoes that URL's
    chains, so the image the other row reached is replaced, not kept and stored again."""
    base, flaky = host.base, f"{host.base}/fault/500/shared-retry"
    splits = {"train": [[row("train000000000", ["qhLion"], ["reached"], [flaky, f"{base}/gen/200x150/121.jpg"]),
                         row("train000000001", ["qhOak"], ["never"], [flaky, f"{base}/fault/404/none"])]]}
    write_release(tmp_path / "release", base, splits=splits)
    run = RunDir(tmp_path / "run")
    assert main(["-q", "import", "--from", str(tmp_path / "release"), "--run", str(run.root)]) == 0
    for retry in ([], ["--retry-failures"]):
        assert main(["-q", "download", "--run", str(run.root), *LOOPBACK_ONLY, *retry]) == 0
        stored = [row["url"] for path in run.path("images").glob("shard-*[0-9].parquet")
                  for row in pq.read_table(path, columns=["url"]).to_pylist()]
        assert stored == [f"{base}/gen/200x150/121.jpg"]
        stats = json.loads(run.marker("download").read_text())["stats"]
        assert (stats["stored"], stats["failed"], stats["reasons"]) == (1, 1, {"http_5xx": 1})
    assert host.hits["/fault/500/shared-retry"] == 2


def test_download_and_build_accept_the_import_and_the_harvest_stages_refuse(built, capsys):
    run, _ = built
    stages = {path.stem for path in run.path("stages").glob("*.json")}
    assert stages == {"import", "download", "build"}
    inputs = json.loads(run.marker("download").read_text())["inputs"]
    assert set(inputs) == {"import"}
    capsys.readouterr()
    for stage in ("kg", "enrich", "queries", "search"):
        assert main(["-q", stage, "--run", str(run.root), "--config", "demo"]) == 1
        error = capsys.readouterr().err
        assert "made by 'entitynet import'" in error and "Traceback" not in error
    before = run.path("entities.parquet").stat().st_mtime_ns
    assert main(["-q", "run", "--run", str(run.root), "--domain", "entitynet", "--until", "build", *LOOPBACK_ONLY]) == 0  # passes the import by
    assert run.path("entities.parquet").stat().st_mtime_ns == before
    assert "already complete" in capsys.readouterr().out


def test_the_card_says_the_data_was_imported(built):
    run, _ = built
    card = (run.path("dataset") / "README.md").read_text()
    assert "imported" in card and "settings not recorded (RUN/config/kg.yaml)" not in card


# Resume ------------------------------------------------------------------------------------------

def write_long_release(folder: Path, rows: int) -> None:
    """The small release with a long train split (links to a closed port: nothing is downloaded)."""
    write_release(folder, "http://127.0.0.1:9")
    for old in (folder / "images_metadata").glob("train-*"):
        old.unlink()
    long = [row(f"train{i:09d}", ["qhLion", "qhOak"], [f"text {i}"], [f"http://127.0.0.1:9/a/{i}.jpg", f"http://127.0.0.1:9/b/{i}.jpg"])
            for i in range(rows)]
    for number, start in enumerate(range(0, rows, rows // 2)):
        pq.write_table(pa.Table.from_pylist(long[start:start + rows // 2]),
                       folder / "images_metadata" / f"train-{number:05d}-of-00002.parquet", row_group_size=1000)


def candidates(run: Path) -> list[tuple]:
    tables = [pq.read_table(path) for path in sorted((run / "candidates").glob("part-*.parquet"))]
    return [tuple(str(value) for value in item.values()) for table in tables for item in table.to_pylist()]


def test_kill_9_mid_import_then_rerun_gives_the_uninterrupted_candidates(tmp_path):
    write_long_release(tmp_path / "release", 24_000)
    args = ["import", "--from", str(tmp_path / "release"), "--rows-per-part", "1000"]
    assert main(["-q", *args, "--run", str(tmp_path / "whole")]) == 0
    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-m", "entitynet", "-q", *args, "--run", str(killed)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.monotonic() + 60
    while len(list((killed / "candidates").glob("part-*.json"))) < 5 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    done_before = len(list((killed / "candidates").glob("part-*.json")))
    assert 5 <= done_before < 25, "the kill should land mid-import"
    assert not (killed / "stages" / "import.json").exists()
    finished = {path.name: path.stat().st_mtime_ns for path in (killed / "candidates").glob("part-*.json")}
    assert main(["-q", *args, "--run", str(killed)]) == 0
    assert candidates(killed) == candidates(tmp_path / "whole")  # same rows, same order, none twice
    assert all((killed / "candidates" / name).stat().st_mtime_ns == at for name, at in finished.items())  # reused
    assert not list((killed / "candidates").glob(".*.tmp"))
    stats = json.loads((killed / "stages" / "import.json").read_text())["stats"]
    assert stats["rows"] == 24_006 and stats["parts_reused"] == done_before
    assert stats == {**json.loads((tmp_path / "whole" / "stages" / "import.json").read_text())["stats"],
                     "parts_written": stats["parts_written"], "parts_reused": done_before}


# Bad sources: one line naming the problem, exit status 1, no traceback ----------------------------

def bad_sources(folder: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (import arguments, what the error must say)."""
    write_release(folder / "release", "http://127.0.0.1:9")
    (folder / "plain").mkdir()
    broken = folder / "broken"
    write_release(broken, "http://127.0.0.1:9")
    (broken / "images_metadata" / "val-00000-of-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    renamed = folder / "renamed"
    write_release(renamed, "http://127.0.0.1:9")
    pq.write_table(pa.table({"key": ["k"], "qh": [["qhLion"]], "texts": [["t"]], "links": [["http://x/a.jpg"]]}),
                   renamed / "images_metadata" / "test-00000-of-00001.parquet")
    pq.write_table(pa.table({"image": ["http://x/a.jpg"], "caption": ["a"]}), folder / "no-url-column.parquet")
    (folder / "no-url.csv").write_text("link,caption\nhttp://x/a.jpg,a\n")
    strange = folder / "strange"
    write_release(strange, "http://127.0.0.1:9")
    pq.write_table(pa.table({"query_hash": ["q"], "query": ["lion"], "query_type": ["bing-image-of"], "entity": ["Q140"]}),
                   strange / "entitynet-queries.parquet")
    release = str(folder / "release")
    return {
        "no such source": (["--from", str(folder / "nowhere")], "no such file or folder"),
        "a folder without images_metadata": (["--from", str(folder / "plain")], "has no images_metadata/"),
        "a split it does not have": (["--from", release, "--splits", "val,holdout"], "split 'holdout': no images_metadata/holdout-"),
        "a malformed parquet": (["--from", str(broken)], "val-00000-of-00001.parquet: not a readable parquet file"),
        "a metadata file without images_link": (["--from", str(renamed)], "test-00000-of-00001.parquet: no column images_link"),
        "a URL list without a URL column": (["--from", str(folder / "no-url-column.parquet")], "no URL column url or URL or image_url"),
        "a CSV without the named URL column": (["--from", str(folder / "no-url.csv"), "--url-column", "href"], "no URL column href"),
        "splits of a URL list": (["--from", str(folder / "no-url.csv"), "--splits", "val"], "a URL list has no splits"),
        "an unknown query type": (["--from", str(strange)], "query_type 'bing-image-of' is none of the release's"),
        "a Hub id that is not cached, offline": (["--from", "lmb-freiburg/not-there"], "cannot fetch it from the Hub"),
    }


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    return folder, bad_sources(folder)


@pytest.mark.parametrize("name", [
    "no such source", "a folder without images_metadata", "a split it does not have", "a malformed parquet",
    "a metadata file without images_link", "a URL list without a URL column", "a CSV without the named URL column",
    "splits of a URL list", "an unknown query type", "a Hub id that is not cached, offline"])
def test_a_bad_source_is_one_clear_error(name, sources, capsys, monkeypatch):
    folder, cases = sources
    arguments, message = cases[name]
    monkeypatch.chdir(folder)  # "lmb-freiburg/not-there" is no local folder here
    run = folder / f"run-{name.replace(' ', '-')}"
    assert main(["-q", "import", *arguments, "--run", str(run)]) == 1
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert not (run / "stages" / "import.json").exists()


# URL lists ---------------------------------------------------------------------------------------

def test_url_lists_of_every_format_are_downloaded_with_their_captions(tmp_path, host, capsys):
    gen = f"{host.base}/gen/200x150"
    pq.write_table(pa.table({"URL": [f"{gen}/21.jpg", None], "TEXT": ["a parquet caption", "no url"]}), tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text(f'url,caption\n{gen}/22.jpg,"a caption, with a comma"\n{host.base}/fault/404/x,dead\n')
    (tmp_path / "c.jsonl").write_text(json.dumps({"url": f"{gen}/23.jpg", "caption": "a json caption"}) + "\n\n")
    (tmp_path / "d.tsv").write_text(f"image_url\talt\n{gen}/24.jpg\ta tab caption\n")
    (tmp_path / "e.txt").write_text(f"{gen}/25.jpg\n\n")
    run = tmp_path / "run"
    assert main(["-q", "import", "--from", str(tmp_path / "*.*"), "--run", str(run)]) == 0
    imported = json.loads((run / "stages" / "import.json").read_text())["stats"]
    assert (imported["rows"], imported["rows_without_url"], imported["candidates"]) == (7, 1, 6)
    assert main(["-q", "download", "--run", str(run), *LOOPBACK_ONLY]) == 0
    stored = {row["url"]: row["sources"][0]["text"] for path in (run / "images").glob("shard-*[0-9].parquet")
              for row in pq.read_table(path).to_pylist()}
    assert stored == {f"{gen}/21.jpg": "a parquet caption", f"{gen}/22.jpg": "a caption, with a comma",
                      f"{gen}/23.jpg": "a json caption", f"{gen}/24.jpg": "a tab caption", f"{gen}/25.jpg": None}
    assert {row["url"]: row["reason"] for row in pq.read_table(run / "images" / "failures.parquet").to_pylist()} == {
        f"{host.base}/fault/404/x": "http_404"}
    capsys.readouterr()
    assert main(["-q", "build", "--run", str(run)]) == 1  # no entities: the images are the result
    assert "a URL list names no entities" in capsys.readouterr().err


# A run made by an import stays one ----------------------------------------------------------------

MALFORMED = {  # file name, text, the line the message names
    "open quote": ("l.csv", 'url,caption\nhttp://h/1.jpg,one\nhttp://h/2.jpg,"two\n' + "".join(
        f"http://h/{i}.jpg,row {i}\n" for i in range(3, 11)), 3),
    "quote closed rows later": ("l.csv", 'url,caption\nhttp://h/1.jpg,"one\nhttp://h/2.jpg,two\nhttp://h/3.jpg,three"\n', 2),
    "text after a quote": ("l.csv", 'url,caption\nhttp://h/1.jpg,one\nhttp://h/2.jpg,"two"x\n', 3),
    "fields": ("l.tsv", "url\tcaption\nhttp://h/1.jpg\tone\nhttp://h/2.jpg\ttwo\tthree\n", 3),
    "json": ("l.jsonl", '{"url": "http://h/1.jpg"}\n\n{"url": "http://h/2.jpg"\n', 3),
    "json array": ("l.jsonl", '{"url": "http://h/1.jpg"}\n["http://h/2.jpg"]\n', 2),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_url_list_is_refused_with_its_line_number(tmp_path, capsys, name):
    file_name, text, line = MALFORMED[name]
    (tmp_path / file_name).write_text(text)
    run = tmp_path / "run"
    assert main(["-q", "import", "--from", str(tmp_path / file_name), "--run", str(run)]) == 1
    error = capsys.readouterr().err
    assert f"{file_name}: line {line}: " in error and "fix the file" in error.lower()
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert not run.exists()  # nothing written


def test_a_quoted_caption_over_lines_that_are_not_rows_is_kept(tmp_path):
    (tmp_path / "l.csv").write_text('url,caption\nhttp://h/1.jpg,"first line\nsecond line, with a comma"\nhttp://h/2.jpg,two\n')
    run = tmp_path / "run"
    assert main(["-q", "import", "--from", str(tmp_path / "l.csv"), "--run", str(run)]) == 0
    texts = [row["text"] for row in pq.read_table(run / "candidates" / "part-00000.parquet").to_pylist()]
    assert texts == ["first line\nsecond line, with a comma", "two"]


def test_urls_that_are_not_http_are_counted_by_reason_and_not_imported(tmp_path, capsys):
    (tmp_path / "l.csv").write_text("url,caption\nhttp://h/1.jpg,one\nftp://h/2.jpg,two\nfile:///etc/passwd,three\n"
                                    "not a url,four\nhttps://h/5.jpg,five\n,six\n")
    run = tmp_path / "run"
    assert main(["import", "--from", str(tmp_path / "l.csv"), "--run", str(run)]) == 0
    stats = json.loads((run / "stages" / "import.json").read_text())["stats"]
    assert (stats["rows"], stats["candidates"], stats["rows_not_http_url"], stats["rows_without_url"]) == (6, 2, 3, 1)
    urls = [row["url"] for row in pq.read_table(run / "candidates" / "part-00000.parquet").to_pylist()]
    assert urls == ["http://h/1.jpg", "https://h/5.jpg"]
    assert "rows whose URL is not http(s) (ftp:, file:, no scheme; not imported): 3" in capsys.readouterr().out


def test_an_import_never_goes_into_a_harvested_run(tmp_path, capsys):
    write_release(tmp_path / "release", "http://127.0.0.1:9")
    run = RunDir(tmp_path / "run")
    run.run_stage("kg", {"made": "by hand"}, [], lambda: {})
    assert main(["-q", "import", "--from", str(tmp_path / "release"), "--run", str(run.root)]) == 1
    assert "holds a harvest (its kg stage ran" in capsys.readouterr().err
    assert not run.path("candidates").exists()


def test_another_import_into_a_finished_one_needs_force(tmp_path, capsys):
    write_release(tmp_path / "release", "http://127.0.0.1:9")
    run = tmp_path / "run"
    base = ["-q", "import", "--from", str(tmp_path / "release"), "--run", str(run)]
    assert main([*base, "--splits", "val"]) == 0
    assert main([*base, "--splits", "val"]) == 0 and "already complete" in capsys.readouterr().out
    assert main([*base, "--splits", "val,test"]) == 1
    assert "different configuration" in capsys.readouterr().err
    assert main([*base, "--splits", "val,test", "--force"]) == 0
    assert json.loads((run / "stages" / "import.json").read_text())["stats"]["rows_per_split"] == {"val": 3, "test": 2}


def test_a_hub_id_is_read_from_huggingface_hubs_cache(tmp_path, monkeypatch):
    """The Hub path is snapshot_download plus the local one: offline, a cached snapshot serves."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--lmb-freiburg--entitynet"
    write_release(repo / "snapshots" / commit, "http://127.0.0.1:9")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(["-q", "import", "--from", "lmb-freiburg/entitynet", "--run", str(run), "--splits", "val"]) == 0
    recorded = RunDir(run).recorded_config("import")["import"]
    assert (recorded["source"], recorded["revision"], recorded["splits"]) == ("lmb-freiburg/entitynet", commit, ["val"])
    stats = json.loads((run / "stages" / "import.json").read_text())["stats"]
    assert stats["source"] == "lmb-freiburg/entitynet" and stats["rows_per_split"] == {"val": 3}
