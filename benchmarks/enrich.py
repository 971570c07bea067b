"""Benchmark: the enrich stage's LLM backend against a loopback chat server with fixed latency.

Entities per second at concurrency 1 and at higher concurrency (ratio against the ideal
speed-up, which is the concurrency itself when the server's latency dominates), and the time of a
fully cached rerun against the first run.

    python benchmarks/enrich.py                                  # 96 entities, 0.2 s per call
    python benchmarks/enrich.py --entities 48 --latency 0.1 --concurrency 1 8

Targets (issue 3): speed-up >= 0.8 x ideal up to 16; cached rerun < 5% of the first run's time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the loopback server the tests use

from fake_llm import FakeLLM  # noqa: E402

from entitynet.config import load_config  # noqa: E402
from entitynet.enrich.stage import enrich  # noqa: E402
from entitynet.records import Ancestor, Entity  # noqa: E402
from entitynet.tables import entity_writer  # noqa: E402


def answer(question: dict) -> str:
    name = question["entity"]
    if "candidates" in question:
        return json.dumps({"natural_type": question["candidates"][0]})
    return json.dumps({
        "color": [{"attribute": "brown", "query": f"brown {name}"}],
        "behavior": [{"attribute": "running", "query": f"{name} running"}],
        "environment": [{"attribute": "in a forest", "query": f"{name} in a forest"}],
    })


def write_entities(path: Path, count: int) -> None:
    with entity_writer(path) as writer:
        for number in range(1, count + 1):
            writer.write(Entity(
                id=f"Q{number}", source="wikidata", name=f"animal {number}", domain="living", root="Q729",
                sitelinks=1000 - number, description="species of mammal",
                ancestors=[Ancestor("Q7377", "mammal", 230, 2), Ancestor("Q42", "ungulate", 80, 1)],
            ))


def run_once(base_url: str, concurrency: int, entities: Path, work: Path, cache: Path) -> float:
    config = load_config(
        "demo",
        assignments=[
            "enrich.natural_type.chooser=llm", "enrich.attributes.backend=llm", f"enrich.llm.base_url={base_url}",
            "enrich.llm.model=bench", f"enrich.llm.concurrency={concurrency}", "enrich.attributes.top_k_per_root=100000",
        ],
    ).enrich
    started = time.perf_counter()
    stats = enrich(config, entities, work / "types.parquet", work / "attributes.parquet", cache)
    seconds = time.perf_counter() - started
    assert stats["natural_types"]["reasons"].get("model", 0) == stats["entities"], stats
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=96)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server waits before each answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="enrich-bench-"))
    server = FakeLLM(answer, latency=args.latency)
    try:
        entities = work / "entities.parquet"
        write_entities(entities, args.entities)
        results = []
        for concurrency in args.concurrency:
            cache = work / f"cache-{concurrency}"
            seconds = run_once(server.base_url, concurrency, entities, work, cache)
            cached = run_once(server.base_url, concurrency, entities, work, cache)
            results.append((concurrency, seconds, cached))
        calls = len(server.requests)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    base = results[0][1]
    print(f"{args.entities} entities, 2 calls each, server latency {args.latency}s, {calls} calls in all\n")
    print("| concurrency | seconds | entities/s | speed-up | ideal | of ideal | cached rerun s | cached / first |")
    print("|---|---|---|---|---|---|---|---|")
    worst_share, worst_cache = 1.0, 0.0
    for concurrency, seconds, cached in results:
        speedup = base / seconds
        share = speedup / concurrency
        worst_share = min(worst_share, share)
        worst_cache = max(worst_cache, cached / seconds)
        print(f"| {concurrency} | {seconds:.2f} | {args.entities / seconds:.1f} | {speedup:.2f} | {concurrency} | "
              f"{share:.0%} | {cached:.3f} | {cached / seconds:.1%} |")
    print(f"\nworst speed-up share: {worst_share:.0%}   target >= 80%   {'OK' if worst_share >= 0.8 else 'MISSED'}")
    print(f"worst cached rerun: {worst_cache:.1%} of the first run   target < 5%   {'OK' if worst_cache < 0.05 else 'MISSED'}")


if __name__ == "__main__":
    main()
