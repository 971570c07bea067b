"""The search stage: Commons against real API answers, Google and Brave against real-shaped ones,
and the local pool engine's matching and balancing."""

from __future__ import annotations

import json
import tarfile
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from entitynet.cli import main
from entitynet.config import SearchConfig
from entitynet.search.base import AnswerCache, EngineError
from entitynet.search.commons import CommonsEngine
from entitynet.search.pool import PoolEngine, QueryIndex
from entitynet.search.stage import make_client
from entitynet.tables import read_rows

COMMONS = "commons_api/openverse-catalog"


class ApiServer(ThreadingHTTPServer):
    """Answers GET requests with whatever ``reply(path, params, headers)`` returns: (status, json)."""

    daemon_threads = True

    def __init__(self, reply) -> None:
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.reply = reply
        self.seen: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


class _ApiHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        parsed = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(parsed.query))
        self.server.seen.append((parsed.path, params, dict(self.headers)))
        status, body = self.server.reply(parsed.path, params, dict(self.headers))
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def api():
    servers = []

    def start(reply):
        server = ApiServer(reply)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def commons_answers(realdata: Path):
    """Real Commons answers: a first page that continues, then the 28 pages of wmc_raw plus three
    real imageinfo oddities (an audio file, a missing licence URL, an artist linking inside the wiki)."""
    folder = realdata / COMMONS
    first = json.loads((folder / "response_small_with_continue.json").read_text())
    second = json.loads((folder / "wmc_raw.json").read_text())
    pages = second["query"]["pages"]
    for number, name in enumerate(["audio_filedata_ogg", "image_info_missing_license_url"], start=1):
        pages[str(-number)] = {"pageid": -number, "ns": 6, "title": f"File:{name}", "imageinfo": [json.loads((folder / f"{name}.json").read_text())]}
    oddity = json.loads((folder / "image_data_example.json").read_text())
    oddity["imageinfo"][0]["extmetadata"] = json.loads((folder / "image_info_artist_internal_link.json").read_text())["extmetadata"]
    pages["-3"] = oddity
    return first, second


def test_commons_parses_real_answers_follows_continuation_and_drops_non_images(realdata, api, tmp_path):
    first, second = commons_answers(realdata)
    server = api(lambda path, params, headers: (200, second if "gaicontinue" in params else first))
    engine = CommonsEngine(make_client(SearchConfig(contact="tests@example.org")), AnswerCache(tmp_path / "cache"), server.url + "/w/api.php", 512)
    found = engine.search("lion", "big cat", "q1", 100)

    assert len(server.seen) == 2
    path, params, headers = server.seen[0]
    assert path == "/w/api.php" and params["maxlag"] == "5" and params["gsrnamespace"] == "6"
    assert params["gsrsearch"] == "lion filetype:bitmap" and params["iiurlwidth"] == "512"
    assert headers["User-Agent"].startswith("EntityNet/") and "tests@example.org" in headers["User-Agent"]
    assert server.seen[1][1]["gaicontinue"] == "next.jpg"  # continuation merged into the next request

    assert engine.drops == {"no_imageinfo": 1, "non_image": 1}  # the first page's bare page, the .ogg file
    assert len(found) == 30 and [c.rank for c in found] == list(range(30))
    licences = Counter(c.license for c in found)
    assert licences["CC BY-SA 4.0"] == 16 and licences["Public domain"] == 10
    missing = next(c for c in found if c.url.endswith("300px-20120925_PlozevetBretagne_LoneTree_DSC07971_PtrQs.jpg"))
    assert missing.license == "CC BY-SA 4.0" and missing.license_url is None and missing.width == 300  # the thumbnail
    assert any(c.attribution == "NotaRealUser" for c in found)  # artist HTML stripped to text
    assert all(c.attribution is None or "<" not in c.attribution for c in found)
    assert all(c.page_url and c.page_url.startswith("https://commons.wikimedia.org/wiki/File:") for c in found)

    again = CommonsEngine(make_client(SearchConfig()), AnswerCache(tmp_path / "cache"), server.url + "/w/api.php", 512)
    assert again.search("lion", "big cat", "q1", 100) == found and len(server.seen) == 2  # cached answers


def test_commons_waits_out_maxlag_and_stops_on_api_errors(realdata, api, tmp_path):
    _, answer = commons_answers(realdata)
    lag = {"error": {"code": "maxlag", "info": "Waiting for db1234: 6 seconds lagged", "lag": 6}}
    replies = iter([lag, lag, answer])
    server = api(lambda path, params, headers: (200, next(replies)))
    waits = []
    client = make_client(SearchConfig())
    client.sleep, client.min_interval = waits.append, 0.0  # only the maxlag waits
    engine = CommonsEngine(client, AnswerCache(tmp_path / "a"), server.url + "/w/api.php", 0)
    assert len(engine.search("oak", None, "q", 50)) == 30 and waits == [5.0, 10.0]

    broken = api(lambda path, params, headers: (200, {"error": {"code": "badvalue", "info": "Unrecognized value"}}))
    with pytest.raises(EngineError, match="badvalue"):
        CommonsEngine(make_client(SearchConfig()), AnswerCache(tmp_path / "b"), broken.url + "/w/api.php", 0).search("oak", None, "q", 50)


def copy_run(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_search_stage_writes_parts_and_resumes_without_asking_again(realdata, api, queried_run, tmp_path, capsys):
    _, answer = commons_answers(realdata)
    server = api(lambda path, params, headers: (200, answer))
    run = copy_run(queried_run, tmp_path / "run")
    args = ["search", "--run", str(run), "--config", "demo", "--engine", "commons", "--per-query", "5",
            "--set", f"search.commons.api_url={server.url}/w/api.php", "--set", "search.commons.min_interval=0",
            "--set", "search.max_queries=5", "--set", "search.queries_per_part=2"]
    assert main(args) == 0
    assert sorted(p.name for p in (run / "candidates").glob("part-*.parquet")) == [f"part-0000{i}.parquet" for i in range(3)]
    rows = [row for part in sorted((run / "candidates").glob("part-*.parquet")) for row in read_rows(part)]
    assert len(rows) == 25 and len({row["query_id"] for row in rows}) == 5
    assert "commons: 25 candidates for 5 queries" in capsys.readouterr().out
    asked = len(server.seen)

    (run / "stages" / "search.json").unlink()  # as if killed before the end
    (run / "candidates" / "part-00001.parquet").unlink()
    assert main(args) == 0
    assert len(server.seen) == asked  # parts kept, answers cached: nothing asked twice
    again = [row for part in sorted((run / "candidates").glob("part-*.parquet")) for row in read_rows(part)]
    assert again == rows
    assert json.loads((run / "stages" / "search.json").read_text())["stats"]["parts_reused"] == 2

    # Other settings: the old parts go, the new ones come from the same cached answers where they can.
    assert main([*args[:-2], "--set", "search.queries_per_part=5", "--force"]) == 0
    assert sorted(p.name for p in (run / "candidates").glob("part-*.parquet")) == ["part-00000.parquet"]


GOOGLE_ITEM = {
    "kind": "customsearch#result", "title": "Lion - Wikipedia", "htmlTitle": "<b>Lion</b> - Wikipedia",
    "link": "https://upload.wikimedia.org/wikipedia/commons/7/73/Lion_waiting_in_Namibia.jpg",
    "displayLink": "en.wikipedia.org", "snippet": "Lion - Wikipedia", "htmlSnippet": "<b>Lion</b> - Wikipedia",
    "mime": "image/jpeg", "fileFormat": "image/jpeg",
    "image": {"contextLink": "https://en.wikipedia.org/wiki/Lion", "height": 1800, "width": 2400, "byteSize": 712332,
              "thumbnailLink": "https://encrypted-tbn0.gstatic.com/images?q=tbn:x", "thumbnailHeight": 113, "thumbnailWidth": 150},
}


def google_answer(params):
    start = int(params["start"])
    items = [dict(GOOGLE_ITEM, link=f"https://example.org/lion-{start + i}.jpg") for i in range(int(params["num"]))]
    if start == 1:
        items[1] = dict(GOOGLE_ITEM, link="https://example.org/lion.svg", mime="text/html")  # not an image
    return {"kind": "customsearch#search", "queries": {"request": [{"startIndex": start}]},
            "searchInformation": {"totalResults": "1230000"}, "items": items}


def test_google_pages_to_the_api_limit_with_hints_and_keeps_the_key_secret(api, queried_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-secret-key-0123456789")
    monkeypatch.setenv("GOOGLE_CSE_ID", "cx-0123")
    server = api(lambda path, params, headers: (200, google_answer(params)))
    run = copy_run(queried_run, tmp_path / "run")
    args = ["search", "--run", str(run), "--config", "demo", "--engine", "google", "--per-query", "250",
            "--set", f"search.google.url={server.url}/customsearch/v1", "--set", "search.max_queries=1"]
    assert main(args) == 0
    starts = [int(params["start"]) for _, params, _ in server.seen]
    assert starts == list(range(1, 100, 10))  # 10 per request, 100 per query at most
    _, params, _ = server.seen[0]
    assert params["searchType"] == "image" and params["imgType"] == "photo" and params["excludeTerms"] == "drawing clipart illustration cartoon"
    assert params["orTerms"]  # the natural type travels as the "or" hint
    rows = list(read_rows(run / "candidates" / "part-00000.parquet"))
    assert len(rows) == 99 and rows[0]["page_url"] == "https://en.wikipedia.org/wiki/Lion" and rows[0]["width"] == 2400
    for path in run.rglob("*"):
        if path.is_file():
            assert b"AIza-secret" not in path.read_bytes(), path

    refused = api(lambda path, params, headers: (403, {"error": {"code": 403, "message": "Daily Limit Exceeded", "errors": [{"reason": "dailyLimitExceeded"}]}}))
    run2 = copy_run(queried_run, tmp_path / "run2")
    assert main([*args[:2], str(run2), *args[3:-2], "--set", f"search.google.url={refused.url}/customsearch/v1",
                 "--set", "search.max_queries=1"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 403" in err and "$GOOGLE_API_KEY" in err and "AIza-secret" not in err


def test_missing_keys_stop_before_any_request(queried_run, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("BRAVE_API_KEY", raising=False)
    assert main(["search", "--run", str(copy_run(queried_run, tmp_path / "run")), "--config", "demo", "--engine", "brave"]) == 1
    assert "set the environment variable BRAVE_API_KEY" in capsys.readouterr().err


def test_brave_sends_its_token_in_a_header(api, queried_run, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAVE_API_KEY", "brave-token-123")
    answer = {"type": "images", "query": {"original": "lion"}, "results": [
        {"type": "image_result", "title": "African lion", "url": "https://example.org/lion-page",
         "source": "example.org", "thumbnail": {"src": "https://imgs.search.brave.com/x"},
         "properties": {"url": "https://example.org/lion.jpg", "placeholder": "https://imgs.search.brave.com/p", "width": 1024, "height": 768},
         "meta_url": {"scheme": "https", "netloc": "example.org", "hostname": "example.org"}, "confidence": "high"},
    ]}
    server = api(lambda path, params, headers: (200, answer))
    run = copy_run(queried_run, tmp_path / "run")
    assert main(["search", "--run", str(run), "--config", "demo", "--engine", "brave",
                 "--set", f"search.brave.url={server.url}/res/v1/images/search", "--set", "search.max_queries=2"]) == 0
    assert all(headers["X-Subscription-Token"] == "brave-token-123" for _, _, headers in server.seen)
    rows = list(read_rows(run / "candidates" / "part-00000.parquet"))
    assert rows[0]["url"] == "https://example.org/lion.jpg" and rows[0]["page_url"] == "https://example.org/lion-page"
    assert rows[0]["width"] == 1024 and rows[0]["engine"] == "brave"


def test_pool_matching_is_by_whole_words():
    index = QueryIndex()
    index.add("lion", "lion", ["Q140"])
    index.add("polar", "polar bear", ["Q33609"])
    index.add("sea-lion", "sea lion", ["wn:sea_lion.n.01"])
    assert index.matches("A LION resting in the shade") == {"lion"}
    assert index.matches("dandelion and lionfish") == set()
    assert index.matches("a polar bear next to a sea lion") == {"polar", "sea-lion", "lion"}
    assert index.matches("bear, polar") == set()


def write_pools(folder: Path) -> dict[str, Path]:
    rows = [{"url": f"https://example.org/{i}.jpg", "caption": f"photo {i} of a common lion"} for i in range(1000)]
    rows += [{"url": f"https://example.org/rare-{i}.jpg", "caption": f"rare okapi {i}"} for i in range(5)]
    rows += [{"url": "https://example.org/none.jpg", "caption": "a bicycle"}]
    folder.mkdir()
    parquet = folder / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    jsonl = folder / "pool.jsonl"
    jsonl.write_text("\n".join(json.dumps({"url": r["url"], "text": r["caption"]}) for r in rows))
    shard = folder / "shard-00000.tar"
    with tarfile.open(shard, "w") as archive:
        for number, row in enumerate(rows):
            data = json.dumps(row).encode()
            info = tarfile.TarInfo(f"{number:09d}.json")
            info.size = len(data)
            archive.addfile(info, BytesIO(data))
    return {"parquet": parquet, "jsonl": jsonl, "tar": shard}


def test_pool_balancing_caps_common_entities_keeps_rare_ones_and_is_deterministic(tmp_path):
    pools = write_pools(tmp_path / "pools")
    index = QueryIndex()
    index.add("q-lion", "lion", ["Q140"])
    index.add("q-okapi", "okapi", ["Q82037"])
    results = {}
    for kind, path in pools.items():
        engine = PoolEngine(path, max_per_entity=100, seed=7)
        results[kind] = list(engine.candidates(index))
        assert engine.rows == 1006
    assert results["parquet"] == results["jsonl"] == results["tar"]
    found = results["parquet"]
    lions = [c for c in found if c.query_id == "q-lion"]
    assert 70 <= len(lions) <= 130  # about max_per_entity of the 1000
    assert len([c for c in found if c.query_id == "q-okapi"]) == 5  # all of a rare entity
    assert [c.rank for c in lions] == list(range(len(lions)))
    assert all(c.text.startswith("photo") for c in lions)
    again = list(PoolEngine(pools["parquet"], max_per_entity=100, seed=7).candidates(index))
    assert again == found
    other_seed = list(PoolEngine(pools["parquet"], max_per_entity=100, seed=8).candidates(index))
    assert other_seed != found


def test_pool_engine_in_the_stage_with_the_demo_sample(queried_run, tmp_path):
    run = copy_run(queried_run, tmp_path / "run")
    assert main(["-q", "search", "--run", str(run), "--config", "demo"]) == 0
    stats = json.loads((run / "stages" / "search.json").read_text())["stats"]
    assert stats["engine"] == "pool" and stats["pool_rows"] == 252 and stats["candidates"] > 100


def test_img2dataset_output_parquet_keeps_successes_only(tmp_path):
    from entitynet.search.pool import pool_rows

    path = tmp_path / "00000.parquet"
    pq.write_table(pa.table({
        "url": ["https://example.org/a.jpg", "https://example.org/b.jpg"], "caption": ["a lion", "a lion too"],
        "status": ["success", "failed_to_download"], "error_message": [None, "timeout"], "key": ["000000000", "000000001"],
    }), path)
    assert list(pool_rows(path)) == [("https://example.org/a.jpg", "a lion")]


def test_pool_rows_that_cannot_be_used_are_counted_by_reason_and_never_stop_the_run(tmp_path):
    good = [{"url": "https://example.org/1.jpg", "text": "a lion"}, {"url": "https://example.org/2.jpg", "text": "a lion cub"}]
    folder = tmp_path / "pool"
    folder.mkdir()
    lines = [json.dumps(row) for row in good] + [
        json.dumps({"text": "a lion without its url"}), json.dumps({"url": "https://example.org/3.jpg", "text": ""}),
        "{not json at all", json.dumps(["a", "list"]),
    ]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    with tarfile.open(folder / "b.tar", "w") as archive:
        for name, data in [("0.json", b"{broken"), ("1.json", json.dumps({"caption": "a lion"}).encode()),
                           ("2.json", json.dumps({"url": "https://example.org/4.jpg", "caption": "a lion"}).encode()),
                           ("2.jpg", b"\xff\xd8\xff")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, BytesIO(data))
    pq.write_table(pa.table({"url": ["https://example.org/5.jpg", None, "https://example.org/6.jpg", "https://example.org/7.jpg"],
                             "caption": ["a lion", "a lion", None, "a lion"],
                             "status": ["success", "success", "success", "failed_to_download"]}), folder / "c.parquet")
    index = QueryIndex()
    index.add("q-lion", "lion", ["Q140"])
    engine = PoolEngine(folder, max_per_entity=100)
    found = list(engine.candidates(index))
    assert sorted(c.url for c in found) == [f"https://example.org/{n}.jpg" for n in (1, 2, 4, 5)]
    assert engine.rows == 4
    assert engine.drops == {"no_url": 3, "no_text": 2, "bad_json": 3, "failed_download": 1}
