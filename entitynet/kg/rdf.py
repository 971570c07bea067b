"""RDF terms in and out of SPARQL: escaping what goes into a query, reading what comes back.

Nothing from the graph or the config is pasted raw into query text: item ids must look like
``Q123``, language tags like ``en``/``pt-br``, and any other string becomes an escaped literal.
Results arrive in the W3C ``application/sparql-results+json`` shape, whichever engine answered.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

WD = "http://www.wikidata.org/entity/"
COMMONS_FILE_PATH = "commons.wikimedia.org/wiki/Special:FilePath/"
PREFIXES = """\
PREFIX wd: <http://www.wikidata.org/entity/>
PREFIX wdt: <http://www.wikidata.org/prop/direct/>
PREFIX wikibase: <http://wikiba.se/ontology#>
PREFIX schema: <http://schema.org/>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX skos: <http://www.w3.org/2004/02/skos/core#>
"""

_QID = re.compile(r"Q[1-9][0-9]*")
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_NUMERIC = {
    "http://www.w3.org/2001/XMLSchema#" + name
    for name in ("integer", "int", "long", "short", "byte", "nonNegativeInteger", "positiveInteger",
                 "negativeInteger", "nonPositiveInteger", "unsignedInt", "unsignedLong")
}
_DECIMAL = {"http://www.w3.org/2001/XMLSchema#" + name for name in ("decimal", "double", "float")}
_BOOLEAN = "http://www.w3.org/2001/XMLSchema#boolean"


def item(qid: str) -> str:
    """``wd:Q140`` for a validated Q-id; anything else is refused, never pasted."""
    if not isinstance(qid, str) or not _QID.fullmatch(qid):
        raise ValueError(f"not a Wikidata item id: {qid!r}")
    return f"wd:{qid}"


def literal(text: str, language: str | None = None) -> str:
    """An escaped SPARQL string literal (ECHAR escapes), optionally language-tagged."""
    body = "".join(_ESCAPES.get(char, char) for char in text)
    if language is None:
        return f'"{body}"'
    if not _LANGUAGE.fullmatch(language):
        raise ValueError(f"not a language tag: {language!r}")
    return f'"{body}"@{language}'


def qid_of(term: dict[str, Any] | None) -> str | None:
    """``Q140`` from a result term holding ``http://www.wikidata.org/entity/Q140``, else None."""
    if not term or term.get("type") != "uri":
        return None
    return qid_from_iri(term["value"])


def qid_from_iri(iri: str) -> str | None:
    if not iri.startswith(WD):
        return None
    qid = iri[len(WD):]
    return qid if _QID.fullmatch(qid) else None


def value_of(term: dict[str, Any] | None) -> Any:
    """A result term as a Python value: typed numbers and booleans converted, text as str."""
    if term is None:
        return None
    value = term["value"]
    datatype = term.get("datatype")
    if term.get("type") in ("literal", "typed-literal") and datatype:
        try:
            if datatype in _NUMERIC:
                return int(value)
            if datatype in _DECIMAL:
                return float(value)
        except ValueError:
            return value
        if datatype == _BOOLEAN:
            return value in ("true", "1")
    return value


def language_of(term: dict[str, Any] | None) -> str | None:
    """The language tag of a literal, lower-cased (JSON results name it ``xml:lang``)."""
    if term is None:
        return None
    tag = term.get("xml:lang") or term.get("lang")
    return tag.lower() if tag else None


def commons_image(term: dict[str, Any] | None) -> str | None:
    """A P18 value as one canonical URL, whatever engine or format answered.

    Dumps and endpoints write ``http://commons.wikimedia.org/wiki/Special:FilePath/Lion%20x.jpg``,
    the JSON entity format the bare ``Lion x.jpg``; both become
    ``https://commons.wikimedia.org/wiki/Special:FilePath/Lion_x.jpg`` (MediaWiki's own spelling:
    underscores for spaces, the rest percent-encoded once).
    """
    value = value_of(term)
    if not isinstance(value, str):
        return None
    position = value.find(COMMONS_FILE_PATH)
    name = value if position < 0 else unquote(value[position + len(COMMONS_FILE_PATH):])
    name = name.strip().replace(" ", "_")
    if not name:
        return None
    return "https://" + COMMONS_FILE_PATH + quote(name, safe="()_,.-!~'")


def rows(results: dict[str, Any]) -> list[dict[str, dict[str, Any]]]:
    """The bindings of a parsed sparql-results+json document."""
    return results["results"]["bindings"]
