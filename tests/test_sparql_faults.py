"""Faults between the client and a real endpoint: retried, bounded, resumable."""

from __future__ import annotations

import re
import time

import pytest

from entitynet.config import KgConfig, SparqlConfig, WikidataConfig
from entitynet.http import parse_retry_after
from entitynet.kg.sparql import HttpTransport, SparqlClient, SparqlError
from entitynet.kg.wikidata import WikidataHarvester

ROOTS = ["Q756", "Q764"]


def config(page_size: int = 20) -> KgConfig:
    return KgConfig(
        sources=["wikidata"],
        sparql=SparqlConfig(page_size=page_size, batch_size=20),
        wikidata=WikidataConfig(roots=ROOTS, require_image=False),
    )


def endpoint(url: str, attempts: int = 8, timeout: float = 1.0) -> HttpTransport:
    return HttpTransport(SparqlConfig(endpoint=url, timeout=timeout, max_attempts=attempts, backoff=0.01, max_wait=5))


def harvest(url: str, cache=None, attempts: int = 8, timeout: float = 1.0):
    client = SparqlClient(endpoint(url, attempts, timeout), cache)
    return list(WikidataHarvester(client, config()).entities()), client


@pytest.fixture
def clean(oxigraph):
    entities, client = harvest(oxigraph.url)
    assert len(entities) > 40
    return entities, client.stats.http.requests


def test_every_kind_of_fault_still_gives_exactly_the_clean_result(clean, fault_proxy):
    expected, _ = clean
    faults = ["429", "503", "hang", "truncated", "html", "500", "reset"]
    proxy = fault_proxy(script=faults, hang=2.0)
    started = time.monotonic()
    entities, client = harvest(proxy.url)
    assert entities == expected
    assert client.stats.http.retries == len(faults)
    assert client.stats.http.errors == {
        "http_429": 1, "http_503": 1, "timeout": 1, "malformed": 2, "http_500": 1, "connection": 1,
    }
    assert client.stats.http.waited_seconds >= 1.0  # the 429's Retry-After: 1 was honoured
    assert time.monotonic() - started < 30


def test_faults_between_pages_are_retried_in_place(clean, fault_proxy):
    expected, _ = clean
    proxy = fault_proxy(script=["ok", "ok", "503", "ok", "truncated", "ok", "html"])
    entities, client = harvest(proxy.url)
    assert entities == expected
    assert client.stats.http.retries == 3


def test_endless_faults_fail_within_the_bound_and_a_rerun_resumes(clean, fault_proxy, tmp_path):
    expected, clean_requests = clean
    cache = tmp_path / "pages"
    good = 5
    proxy = fault_proxy(script=["ok"] * good, then="503")
    started = time.monotonic()
    with pytest.raises(SparqlError) as failure:
        harvest(proxy.url, cache, attempts=3)
    assert time.monotonic() - started < 10
    message = str(failure.value)
    assert proxy.url.rsplit("/", 1)[0] in message  # names the endpoint
    assert re.search(r"gave up on \w[\w ]* of [\w ]+, page \d+ after 3 attempts: HTTP 503", message)  # what, which page, why
    assert "rerun" in message
    assert len(list(cache.glob("*.json"))) == good  # what was fetched is kept

    proxy.then = "ok"  # the endpoint recovers
    asked_before = len(proxy.requests)
    entities, client = harvest(proxy.url, cache)
    assert entities == expected
    assert client.stats.pages_from_cache == good
    assert len(proxy.requests) - asked_before == clean_requests - good  # only the missing pages


def test_a_retry_after_longer_than_the_bound_fails_at_once(fault_proxy):
    proxy = fault_proxy(then="429-long")
    started = time.monotonic()
    with pytest.raises(SparqlError, match="asked to wait 3600s"):
        harvest(proxy.url)
    assert time.monotonic() - started < 5
    assert len(proxy.requests) == 1


def test_a_refused_connection_is_retried_then_reported(tmp_path):
    from helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/query"
    with pytest.raises(SparqlError, match="connection failed") as failure:
        harvest(url, attempts=2)
    assert "127.0.0.1" in str(failure.value)


def test_a_bad_query_is_not_retried(oxigraph):
    client = SparqlClient(endpoint(oxigraph.url, attempts=5, timeout=5), None)
    with pytest.raises(SparqlError, match="members of nothing: HTTP 400"):
        client.select("SELECT ?x WHERE { this is not sparql }", "members of nothing")
    assert client.stats.http.requests == 1


def test_credentials_in_the_endpoint_url_never_reach_messages(tmp_path):
    from helpers import free_port

    from entitynet.typed_config import InvalidValue

    url = f"http://127.0.0.1:{free_port()}/query?key=hidden"
    with pytest.raises(SparqlError) as failure:
        harvest(url, attempts=1)
    assert "hidden" not in str(failure.value)
    with pytest.raises(InvalidValue, match="user:password"):  # refused before any request, or any file
        SparqlConfig(endpoint=f"http://user:s3cr3t@127.0.0.1:{free_port()}/query")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0", 0.0), (" 12 ", 12.0), ("soon", None), (None, None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_header_forms(header, seconds):
    assert parse_retry_after(header) == seconds
