"""Real query.wikidata.org answers (shared/realdata) read with the harvest's own term helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from entitynet.http import HttpStats
from entitynet.kg.rdf import commons_image, qid_of, rows, value_of
from entitynet.kg.sparql import SparqlClient, bindings

RESULTS = "sparql_results"


def load(realdata: Path, name: str) -> list[dict]:
    return rows(json.loads((realdata / RESULTS / name).read_text(encoding="utf-8")))


class Replay:
    """A transport that answers with a recorded body: the client parses it like any answer."""

    name = "replay"
    key = "replay"
    stats = HttpStats()

    def __init__(self, body: bytes) -> None:
        self.body = body

    def fetch(self, query: str) -> tuple[bytes, list]:
        return self.body, bindings(self.body)


@pytest.mark.parametrize(
    "name",
    [
        "josh-wikidata-api-schemas/cats.json",
        "josh-wikidata-api-schemas/catpics.json",
        "josh-wikidata-api-schemas/datatype-demonstration.json",
        "beehind-wd-types/wd-types.sparql.json",
        "wikibase-sdk/results_with_labels_descriptions_and_aliases.json",
        "wikibase-sdk/sparql_results_with_optional_values.json",
    ],
)
def test_the_client_accepts_real_answers(realdata, name):
    body = (realdata / RESULTS / name).read_bytes()
    bindings = SparqlClient(Replay(body), None).select("SELECT * WHERE {}", name)
    assert bindings == load(realdata, name)
    assert bindings


def test_special_filepath_images_become_canonical_urls(realdata):
    pictures = load(realdata, "josh-wikidata-api-schemas/catpics.json")
    urls = [commons_image(row["pic"]) for row in pictures]
    assert all(url.startswith("https://commons.wikimedia.org/wiki/Special:FilePath/") for url in urls)
    assert all(" " not in url for url in urls)
    gli = next(url for url in urls if "Ayasofya" in url)
    assert gli.endswith("/Ayasofya_Gli_cat.jpg")
    # the same image named three ways is one URL
    assert commons_image({"value": "Ayasofya Gli cat.jpg"}) == gli
    assert commons_image({"type": "uri", "value": gli}) == gli
    specimens = load(realdata, "beehind-wd-types/wd-types.sparql.json")
    tricky = next(row["image"]["value"] for row in specimens if "%28" in row["image"]["value"])
    assert "%2528" not in commons_image(row_image := {"type": "uri", "value": tricky})  # decoded once, not twice
    assert commons_image({"type": "uri", "value": commons_image(row_image)}) == commons_image(row_image)


def test_typed_literals_become_python_values(realdata):
    values = {
        row["prop"]["value"].rsplit("/", 1)[1]: row["value"]
        for row in load(realdata, "josh-wikidata-api-schemas/datatype-demonstration.json")
    }
    decimals = [t for t in values.values() if t.get("datatype", "").endswith("#decimal")]
    assert decimals and all(isinstance(value_of(t), float) for t in decimals)
    dates = [t for t in values.values() if t.get("datatype", "").endswith("#dateTime")]
    assert dates and all(isinstance(value_of(t), str) and value_of(t)[:1] in "+-0123456789" for t in dates)
    items = [t for t in values.values() if t["type"] == "uri" and qid_of(t)]
    assert items
    assert value_of({"type": "literal", "value": "256", "datatype": "http://www.w3.org/2001/XMLSchema#integer"}) == 256


def test_aliases_and_descriptions_with_quotes_and_accents(realdata):
    answer = load(realdata, "wikibase-sdk/results_with_labels_descriptions_and_aliases.json")
    labels = {qid_of(row["item"]): value_of(row.get("itemLabel")) for row in answer}
    assert labels["Q2835567"] == 'Alfredo "Chocolate" Armenteros'
    assert labels["Q6512"] == "Søren Kierkegaard"
    missing = [row for row in answer if "itemDescription" not in row]
    assert missing and all(value_of(row.get("itemDescription")) is None for row in missing)
