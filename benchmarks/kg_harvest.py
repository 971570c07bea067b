"""Benchmark: the kg stage's Wikidata harvest against a local oxigraph server.

For each size it generates a Wikidata-shaped taxonomy (labels, descriptions, aliases, P31,
P171 chains to animal Q729, P225, P1843, P18, sitelinks on data nodes), loads it into
``oxigraph serve-read-only`` on 127.0.0.1, then in fresh processes

1. runs ``entitynet kg`` against it (recording every query the harvest sends), and
2. replays exactly those queries with plain ``urllib`` POSTs that only read the bytes,

and prints entities/s, HTTP requests, peak RSS of the harvest process, the harvest/plain-HTTP
time ratio (the client's overhead: paging, retries machinery, parsing, records, parquet) and
the peak-RSS ratio between the largest and smallest size.

    python benchmarks/kg_harvest.py                    # 20k and 200k taxa (targets below)
    python benchmarks/kg_harvest.py --sizes 2000 20000  # quicker

Targets (issue 2): overhead <= 1.3x; peak RSS at 200k < 2x peak RSS at 20k.
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
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = "Q729"
RANKS = [("phylum", 0.0001), ("class", 0.0005), ("order", 0.003), ("family", 0.015), ("genus", 0.08)]
WORDS = "red blue green spotted striped giant lesser common northern southern eastern western alpine desert".split()


def generate(size: int, path: Path, seed: int = 7) -> None:
    """N-Triples of ``size`` taxa below Q729, in Wikidata's vocabulary, streamed to ``path``.

    Streamed, not built in memory: a child started by a big parent inherits the parent's peak
    RSS in its own ru_maxrss (Linux keeps the pre-exec high-water mark), which would falsify
    the harvest's measurement.
    """
    rng = random.Random(seed)
    wd, wdt = "http://www.wikidata.org/entity/", "http://www.wikidata.org/prop/direct/"
    label, about = "http://www.w3.org/2000/01/rdf-schema#label", "http://schema.org/about"
    previous, next_id, made = [ROOT], 1_000_000, 0
    levels = [(name, max(1, int(size * share))) for name, share in RANKS]
    levels.append(("species", size - sum(count for _, count in levels)))
    with path.open("w") as out:
        out.write(f'<{wd}{ROOT}> <{label}> "animal"@en .\n')
        for rank, count in levels:
            current = []
            for _ in range(count):
                qid = f"Q{next_id}"
                next_id += 1
                parent = rng.choice(previous)
                genus = f"Genus{rng.randrange(10**6)}"
                name = f"{rng.choice(WORDS)} {rank} {made}"
                node = f"<{wd}{qid}>"
                data = f"<https://www.wikidata.org/wiki/Special:EntityData/{qid}>"
                lines = [
                    f'{node} <{label}> "{name}"@en .',
                    f'{node} <http://schema.org/description> "{rank} of animals"@en .',
                    f"{node} <{wdt}P31> <{wd}Q16521> .",
                    f"{node} <{wdt}P171> <{wd}{parent}> .",
                    f'{node} <{wdt}P225> "{genus} {rank}{made}" .',
                    f"{data} <{about}> {node} .",
                    f"{data} <http://wikiba.se/ontology#sitelinks> "
                    f'"{int(rng.paretovariate(1.2)) % 300}"^^<http://www.w3.org/2001/XMLSchema#integer> .',
                ]
                if rng.random() < 0.5:
                    lines.append(f'{node} <{wdt}P1843> "{rng.choice(WORDS)} {name}"@en .')
                if rng.random() < 0.5:
                    lines.append(f"{node} <{wdt}P18> <http://commons.wikimedia.org/wiki/Special:FilePath/{qid}%20photo.jpg> .")
                if rng.random() < 0.2:
                    lines.append(f'{node} <http://www.w3.org/2004/02/skos/core#altLabel> "{name} alias"@en .')
                out.write("\n".join(lines) + "\n")
                current.append(qid)
                made += 1
            previous = current


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(data: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("oxigraph") or str(Path(sys.executable).parent / "oxigraph")
    subprocess.run([binary, "load", "--location", str(folder), "--file", str(data)], check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen(
        [binary, "serve-read-only", "--location", str(folder), "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/query"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}?query=ASK%7B%7D", timeout=1).close()
            return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("oxigraph did not start")


# Runs in a child process: the harvest, with every query appended to a log for the replay.
HARVEST = """
import json, sys
from entitynet.kg import sparql
log = open(sys.argv[1], "a")
fetch = sparql.HttpTransport.fetch
def recording(self, query):
    log.write(json.dumps(query) + "\\n")
    return fetch(self, query)
sparql.HttpTransport.fetch = recording
from entitynet.cli import main
sys.exit(main(sys.argv[2:]))
"""

# Runs in a child process: the same queries over plain HTTP, bytes read and discarded.
REPLAY = """
import json, sys, urllib.parse, urllib.request
url = sys.argv[2]
for line in open(sys.argv[1]):
    body = urllib.parse.urlencode({"query": json.loads(line)}).encode()
    request = urllib.request.Request(url, data=body, headers={"Accept": "application/sparql-results+json"})
    with urllib.request.urlopen(request, timeout=600) as answer:
        answer.read()
"""


def run_child(code: str, args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (kB) of a child Python process."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"child failed ({status}): {args[:3]}")
    return seconds, usage.ru_maxrss


def measure(size: int, work: Path) -> dict:
    data = work / f"taxa-{size}.nt"
    generate(size, data)
    server, url = start_server(data, work / f"store-{size}")
    try:
        log = work / f"queries-{size}.jsonl"
        run = work / f"run-{size}"
        harvest_args = [
            str(log), "-q", "kg", "--run", str(run), "--sources", "wikidata", "--endpoint", url,
            "--set", f"kg.wikidata.roots=[{ROOT}]", "--set", "kg.wikidata.require_image=false",
        ]
        harvest_seconds, peak_kb = run_child(HARVEST, harvest_args)
        replay_seconds, _ = run_child(REPLAY, [str(log), url])
        stats = json.loads((run / "stages" / "kg.json").read_text())["stats"]
        return {
            "taxa": size,
            "entities": stats["entities"],
            "requests": stats["wikidata"]["sparql"]["requests"],
            "harvest_s": round(harvest_seconds, 2),
            "plain_http_s": round(replay_seconds, 2),
            "overhead": round(harvest_seconds / replay_seconds, 3),
            "entities_per_s": round(stats["entities"] / harvest_seconds),
            "peak_rss_mb": round(peak_kb / 1024, 1),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = [measure(size, work) for size in sorted(args.sizes)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    header = list(results[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in results:
        print("| " + " | ".join(str(row[key]) for key in header) + " |")
    worst = max(row["overhead"] for row in results)
    rss_ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    print(f"\noverhead (harvest / plain HTTP), worst: {worst:.2f}x   target <= 1.3x   {'OK' if worst <= 1.3 else 'MISSED'}")
    print(
        f"peak RSS {results[-1]['taxa']} vs {results[0]['taxa']} taxa: {rss_ratio:.2f}x   target < 2x   "
        f"{'OK' if rss_ratio < 2 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
