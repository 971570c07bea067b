"""The run report (entitynet report): its numbers come from the run's files, it opens in a real
browser from disk with nothing fetched from the network, and a partial run's report says what
is missing."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import skip_or_fail

from entitynet.cli import main

# what a copied run leaves behind: big and not read by the report
NOT_COPIED = shutil.ignore_patterns("checkpoints", "cache", "model", "tokenizer", "demo-pool")


class Facts(HTMLParser):
    """The page's ``data-fact`` values and its visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.facts: dict[str, str] = {}
        self.text: list[str] = []
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "img", "meta"):
            return
        self._open.append(dict(attrs).get("data-fact"))

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("br", "img", "meta") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._open and self._open[-1]:
            self.facts[self._open[-1]] = self.facts.get(self._open[-1], "") + data.strip()


def read_page(run: Path) -> Facts:
    page = Facts()
    page.feed((run / "report" / "index.html").read_text(encoding="utf-8"))
    page.visible = " ".join(" ".join(page.text).split())  # type: ignore[attr-defined]
    return page


def rows(paths: list[Path], columns: list[str]) -> list[dict]:
    return [row for path in paths for row in pq.read_table(path, columns=columns).to_pylist()]


def test_the_demo_writes_the_report_and_its_numbers_come_from_the_runs_files(demo_run):
    page = read_page(demo_run)
    facts = page.facts

    entities = rows([demo_run / "entities.parquet"], ["id", "domain"])
    assert int(facts["entities"]) == len(entities)
    for domain, count in Counter(e["domain"] for e in entities).items():
        assert int(facts[f"domain.{domain}"]) == count

    shards = sorted((demo_run / "images").glob("shard-*[0-9].parquet"))
    assert int(facts["stored"]) == sum(pq.read_metadata(p).num_rows for p in shards)
    assert int(facts["failed"]) == pq.read_metadata(demo_run / "images" / "failures.parquet").num_rows
    kinds = Counter(row["kind"] for row in rows([demo_run / "images" / "duplicates.parquet"], ["kind"]))
    assert (int(facts["identical"]), int(facts["near"])) == (kinds.get("identical", 0), kinds.get("near", 0))
    parts = sorted((demo_run / "candidates").glob("part-*.parquet"))
    assert int(facts["candidates"]) == sum(pq.read_metadata(p).num_rows for p in parts)

    # rows per configuration and split, and images per entity, counted from the dataset's files
    data = demo_run / "dataset" / "data"
    for config, domains in (("livingthings", ["living"]), ("entitynet", ["living", "other"])):
        for split in ("train", "validation", "test", "test_seen"):
            files = [p for d in domains for p in sorted((data / d).glob(f"{split}-*.parquet"))]
            assert int(facts[f"rows.{config}.{split}"]) == sum(pq.read_metadata(p).num_rows for p in files)
    per_entity = Counter(e["id"] for row in rows(sorted(data.glob("*/*.parquet")), ["entities"]) for e in row["entities"])
    counts = [per_entity.get(e["id"], 0) for e in entities]
    assert int(facts["bucket.0"]) == counts.count(0)
    assert int(facts["bucket.1-9"]) == sum(1 <= n <= 9 for n in counts)
    assert int(facts["entities_with_images"]) == sum(n > 0 for n in counts)
    assert int(facts["max_per_entity"]) == max(counts)

    for stage in ("kg", "enrich", "queries", "search", "download", "build", "train", "eval"):
        assert facts[f"stage.{stage}"] == "finished"
    evaluations = json.loads((demo_run / "stages" / "eval.json").read_text())["stats"]["evaluations"]
    assert set(evaluations) == {"seen_entities", "unseen_entities"}
    for key, found in evaluations.items():
        assert float(facts[f"eval.{key}.acc1"]) == pytest.approx(found["acc1"], abs=5e-4)
        assert float(facts[f"eval.{key}.chance"]) == pytest.approx(found["chance"], abs=5e-4)
    tasks = [path for path in sorted((demo_run / "eval").glob("*.json")) if path.name != "classes.json"]
    assert tasks
    for path in tasks:
        task = json.loads(path.read_text())
        assert float(facts[f"task.{task['task_name']}.acc1"]) == pytest.approx(task["metrics"]["acc1"], abs=5e-4)

    # best and worst classes: the eval stage's per-class counts agree with its top-1
    classes = json.loads((demo_run / "eval" / "classes.json").read_text())
    for path in tasks:
        task = json.loads(path.read_text())
        found = classes[task["task_name"]]
        assert sum(c["images"] for c in found["classes"]) >= task["num_images"]
        if sum(c["images"] for c in found["classes"]) == task["num_images"]:  # one entity per image
            assert sum(c["right"] for c in found["classes"]) == round(task["metrics"]["acc1"] * task["num_images"])
        assert sum(x["count"] for x in found["confusions"]) <= task["num_images"]
        assert f"<h4>{task['task_name']}</h4>" in (demo_run / "report" / "index.html").read_text()

    report = demo_run / "report"
    assert (report / "figures" / "training.png").is_file() and (report / "figures" / "images_per_entity.png").is_file()
    assert len(list((report / "thumbs").glob("*.jpg"))) >= 4 * 4  # every split's grid
    assert "SYNTHETIC" in page.visible  # type: ignore[attr-defined]
    assert sum(p.stat().st_size for p in report.rglob("*") if p.is_file()) < 10_000_000


def test_the_pictures_carry_their_entity_alt_text_and_the_text_mixs_texts(demo_run):
    from entitynet.report import pictures

    html = (demo_run / "report" / "index.html").read_text(encoding="utf-8")
    train = sorted((demo_run / "dataset" / "data" / "living").glob("train-*.parquet"))
    table = rows(train, ["image_id", "alt_texts", "entities", "queries"])
    thumbs = {p.name for p in (demo_run / "report" / "thumbs").glob("train-*.jpg")}
    shown = [row for row in table if f"train-{row['image_id'][:16]}.jpg" in thumbs]
    assert len(shown) == min(pictures.PER_SPLIT, len(table))
    # one per entity before any entity twice
    firsts = [row["entities"][0]["id"] for row in shown]
    assert len(set(firsts)) == min(len(shown), len({row["entities"][0]["id"] for row in table}))
    from entitynet.report.gather import text_settings
    from entitynet.rundir import RunDir
    from entitynet.training.text_mix import sample_text

    config, seed = text_settings(RunDir(demo_run))
    for row in shown[:5]:
        assert row["entities"][0]["name"] in html
        for epoch in range(3):
            text = sample_text(row, config, seed, epoch)
            assert text.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&#39;").replace('"', "&#34;") in html


def test_per_class_recall_and_confusions():
    pytest.importorskip("torch")
    from entitynet.training.evaluation.classes import ClassSet
    from entitynet.training.evaluation.scoring import per_class

    classes = ClassSet.from_names(["ant", "bee", "cat"])
    found = per_class(classes, references=[[0], [0], [1], [2, 1]], top=[0, 1, 1, 0])
    assert [(c["name"], c["right"], c["images"]) for c in found["classes"]] == [("ant", 1, 2), ("bee", 1, 2), ("cat", 0, 1)]
    assert [(x["true_name"], x["predicted_name"], x["count"]) for x in found["confusions"]] == [("ant", "bee", 1), ("cat", "ant", 1)]


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=NOT_COPIED)
    shutil.rmtree(to / "report", ignore_errors=True)
    return to


def _forget(run: Path, stages: list[str], folders: list[str]) -> None:
    for stage in stages:
        (run / "stages" / f"{stage}.json").unlink(missing_ok=True)
    for folder in folders:
        shutil.rmtree(run / folder, ignore_errors=True)


def test_a_run_stopped_after_download_gets_a_report_of_its_data(demo_run, tmp_path, capsys):
    run = _copy(demo_run, tmp_path / "run")
    _forget(run, ["build", "train", "eval"], ["dataset", "logs", "eval"])
    assert main(["report", "--run", str(run)]) == 0
    assert f"Report: {run / 'report' / 'index.html'}" in capsys.readouterr().out
    page = read_page(run)
    text = page.visible  # type: ignore[attr-defined]
    assert page.facts["stage.download"] == "finished" and page.facts["stage.build"] == "not run"
    assert int(page.facts["stored"]) == json.loads((run / "stages" / "download.json").read_text())["stats"]["stored"]
    assert "stored images (no dataset built)" in text  # images per entity, through the queries
    assert int(page.facts["entities_with_images"]) > 0
    assert "No dataset: the build stage has not run." in text
    assert "No pictures: the dataset is not built." in text
    assert "No training in this run" in text and "No evaluation in this run" in text
    assert not (run / "report" / "thumbs").exists() or not any((run / "report" / "thumbs").iterdir())


def test_a_run_without_training_shows_its_pictures_and_says_training_is_missing(demo_run, tmp_path):
    run = _copy(demo_run, tmp_path / "run")
    _forget(run, ["train", "eval"], ["logs", "eval"])
    assert main(["-q", "report", "--run", str(run)]) == 0
    page = read_page(run)
    text = page.visible  # type: ignore[attr-defined]
    assert page.facts["stage.train"] == "not run" and page.facts["stage.build"] == "finished"
    assert any((run / "report" / "thumbs").glob("train-*.jpg"))
    assert "No training in this run" in text and "No evaluation in this run" in text
    assert not (run / "report" / "figures" / "training.png").exists()


def test_decontamination_shows_what_it_removed_and_publishes_which_image_matched_which(demo_run, tmp_path):
    """Two stored images given back as an evaluation set: the build leaves them out and writes
    dataset/decontamination.csv, which the page counts and links (a copy beside the page)."""
    import csv

    run = _copy(demo_run, tmp_path / "run")
    _forget(run, ["build", "train", "eval"], ["dataset", "logs", "eval"])
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    shard = pq.read_table(sorted((run / "images").glob("shard-*[0-9].parquet"))[0], columns=["image", "url"])
    for name, blob in zip(("a.jpg", "b.jpg"), shard.column("image").to_pylist()[:2]):
        (evaluation / name).write_bytes(blob)
    assert main(["-q", "build", "--run", str(run), "--config", str(run / "config" / "run.yaml"),
                 "--exclude-near", str(evaluation)]) == 0
    assert main(["-q", "report", "--run", str(run)]) == 0

    removed = json.loads((run / "stages" / "build.json").read_text())["stats"]["excluded_near_evaluation_images"]
    with (run / "dataset" / "decontamination.csv").open() as handle:
        matches = list(csv.DictReader(handle))
    assert {m["evaluation_image"] for m in matches} == {"a.jpg", "b.jpg"}
    assert set(shard.column("url").to_pylist()[:2]) <= {m["url"] for m in matches}
    assert removed == len({m["url"] for m in matches}) >= 2
    page = read_page(run)
    assert int(page.facts["decontaminated"]) == removed
    assert (run / "report" / "decontamination.csv").read_bytes() == (run / "dataset" / "decontamination.csv").read_bytes()
    assert 'href="decontamination.csv"' in (run / "report" / "index.html").read_text()


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path)]) == 1
    assert "is not a run directory" in capsys.readouterr().err


def test_the_report_opens_in_a_real_browser_from_disk(demo_run, tmp_path):
    """Debian's chromium, headless: no console errors, every image loaded, nothing but file://
    requested; a screenshot at desktop and phone width (into ENTITYNET_REPORT_SCREENSHOTS when set)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed (pip install 'entitynet[test]')")
    if not (shutil.which("chromium") and Path("/usr/bin/chromedriver").exists()):
        skip_or_fail("chromium is not installed (apt-get install chromium chromium-driver; .ci/setup does)")
    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium's manager must not phone home
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    screens = Path(os.environ.get("ENTITYNET_REPORT_SCREENSHOTS") or tmp_path)
    screens.mkdir(parents=True, exist_ok=True)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.set_page_load_timeout(30)
        for name, width in (("desktop", 1280), ("phone", 390)):
            browser.set_window_size(width, 2000)
            browser.get((demo_run / "report" / "index.html").as_uri())
            loaded = browser.execute_script(
                "return Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))"
                ".then(() => Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth]))")
            assert len(loaded) > 20
            assert [src for src, width in loaded if not width] == []
            requests = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
            assert [url for url in requests if not url.startswith("file://")] == []
            assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []
            opened = browser.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")
            assert 0 < opened < 2000, f"the page took {opened:.0f} ms to load"  # the bound
            if name == "phone":  # nothing wider than the phone's screen but the scrolling tables
                assert browser.execute_script("return document.documentElement.scrollWidth") <= width + 1
            assert browser.save_screenshot(str(screens / f"report-{name}.png"))
    finally:
        browser.quit()
