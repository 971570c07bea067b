"""The records handed from one stage to the next (DESIGN.md, "Records").

Small slotted dataclasses with no behaviour beyond validation: stages are pure
functions over them, and ``entitynet.tables`` stores them as parquet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Domain = Literal["living", "other"]


@dataclass(slots=True, frozen=True)
class Ancestor:
    """A class or parent taxon of an entity, a natural-type candidate for the enrich stage."""

    id: str
    label: str | None
    sitelinks: int | None  # None where the source has no popularity (WordNet)
    hops: int  # 1 = direct parent
    # a parent taxon's rank (Wikidata P105) as a name: "genus", "family", ... (kg.wikidata.TAXON_RANKS);
    # None for classes, WordNet hypernyms and unlisted ranks
    rank: str | None = None


@dataclass(slots=True, frozen=True)
class VisualFact:
    """A Wikidata statement about looks: colour (P462), has characteristic (P1552),
    has part (P527), made from material (P186). Raw material for kg attributes."""

    property: str  # "P462"
    id: str  # the value item, "Q23445"
    label: str | None


@dataclass(slots=True)
class Entity:
    """One thing images will be searched for: a Wikidata item or a WordNet synset."""

    id: str  # "Q140" or "wn:lion.n.01"
    source: Literal["wikidata", "wordnet"]
    name: str
    domain: Domain
    root: str  # the configured root it was harvested under ("Q729", "wn:living_thing.n.01")
    aliases: list[str] = field(default_factory=list)
    description: str | None = None
    natural_type: str | None = None  # chosen by the enrich stage
    sitelinks: int | None = None
    taxon_name: str | None = None  # P225, the scientific name
    taxon_rank: str | None = None  # P105 as an item id ("Q7432": species)
    inaturalist_id: str | None = None  # P3151, iNaturalist's taxon id ("41964")
    common_names: list[str] = field(default_factory=list)
    image: str | None = None  # P18 as a Commons Special:FilePath URL
    ancestors: list[Ancestor] = field(default_factory=list)
    same_as: list[str] = field(default_factory=list)  # ids of the same thing in other sources
    lemmas: list[str] = field(default_factory=list)  # WordNet lemma names (own or merged synset)
    visual_facts: list[VisualFact] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class NaturalType:
    """The class an entity is named by, how it was chosen, and what it was chosen from."""

    entity_id: str
    natural_type: str | None
    reason: str  # which rule decided (popular_common_noun, common_noun, most_popular, root_fallback, ...)
    chooser: str  # "kg", "llm:<model>", "transformers:<model>"
    candidates: list[Ancestor] = field(default_factory=list)
    visual: bool | None = None  # asked of LLM choosers for EntityNet; False drops the entity


AttributeCategory = Literal["color", "pattern", "parts", "shape", "behavior", "environment", "other"]


@dataclass(slots=True, frozen=True)
class Attribute:
    """A visual attribute of an entity and the search query that shows it."""

    entity_id: str
    category: AttributeCategory
    attribute: str  # "spotted", "tusks", "perched on a branch"
    query: str  # contains the entity's name or one of its aliases: "spotted leopard"
    backend: str  # "kg", "llm:<model>", "transformers:<model>"


QueryKind = Literal["noun", "attr", "attrnoun", "wordnet-noun"]


@dataclass(slots=True, frozen=True)
class QueryUse:
    """Why a query exists: one entity (and attribute) it serves."""

    kind: QueryKind
    entity_id: str
    attribute: str | None = None


@dataclass(slots=True)
class Query:
    """One unique search text with the natural type that disambiguates it, and every use."""

    query_id: str  # stable hash of (text, natural_type)
    text: str
    natural_type: str | None
    uses: list[QueryUse] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Candidate:
    """An image a search engine returned for a query, before it is fetched."""

    url: str  # what the downloader fetches (a thumbnail at the configured size where the engine has one)
    query_id: str
    engine: str  # commons | google | brave | pool | inaturalist | import
    rank: int  # 0-based position in the engine's answer
    page_url: str | None = None  # the page that shows the image (for attribution and the viewer)
    text: str | None = None  # alt text, title or caption
    width: int | None = None
    height: int | None = None
    mime: str | None = None
    license: str | None = None  # short name: "CC BY-SA 4.0", "Public domain"
    license_url: str | None = None
    attribution: str | None = None  # who to credit, as plain text
    # Set by engines whose source identifies what is shown (inaturalist): the taxon the observation
    # is identified as (a descendant of the entity's taxon where search.inaturalist.descendants) and its date.
    taxon_id: str | None = None
    taxon_name: str | None = None
    observed_on: str | None = None  # ISO date
    # Set by `entitynet import` only (a search engine leaves them empty):
    alternatives: tuple[str, ...] = ()  # further URLs of the same picture, tried in order when ``url`` fails
    split: str | None = None  # the split a release put the image in (train, validation, test): kept, not redrawn


@dataclass(slots=True, frozen=True)
class Finding:
    """One way a URL was found: the query and engine that returned it, and what came with it."""

    query_id: str
    engine: str
    rank: int
    text: str | None = None
    page_url: str | None = None
    license: str | None = None
    license_url: str | None = None
    attribution: str | None = None
    split: str | None = None  # the released split (Candidate.split), carried to the build


@dataclass(slots=True, frozen=True)
class PlannedUrl:
    """A URL of the download plan: fetched once, whatever number of queries found it."""

    url: str
    sources: list[Finding]
    # An import's other links to the picture, tried in order when ``url`` fails. Each released row
    # is a chain of its own: two rows that share a first link may differ after it, so ``tails``
    # lists every distinct tail (the first source's first) and ``tail_of`` gives each source's.
    tails: list[list[str]] = field(default_factory=lambda: [[]])
    tail_of: list[int] = field(default_factory=list)  # per source; missing: every source has tails[0]

    def chains(self) -> list[tuple[list[str], list[Finding]]]:
        """(links, sources) per tail, in plan order: ``url`` then that tail, and the sources whose
        rows named those links."""
        tail_of = self.tail_of or [0] * len(self.sources)
        return [([self.url, *tail], [source for source, t in zip(self.sources, tail_of) if t == number])
                for number, tail in enumerate(self.tails)]


@dataclass(slots=True, frozen=True)
class StoredImage:
    """A fetched, validated, resized and re-encoded image (a row of RUN/images/shard-NNNNN.parquet)."""

    image_id: str  # sha256 of the stored bytes
    image: bytes  # JPEG or WebP
    width: int
    height: int
    original_width: int
    original_height: int
    dhash: int  # 64-bit difference hash, for near-duplicates
    source_format: str | None  # what the magic bytes said the fetched file was
    url: str
    final_url: str  # after redirects
    sources: list[Finding]
    position: int  # the URL's place in its shard's plan; rows are written as downloads finish
    # The planned URL and its alternatives that are not ``url`` (an import's duplicates of the
    # picture, in the release's order): the image's other URLs.
    alternatives: list[str] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Failure:
    """A URL that did not become an image, and why (DESIGN.md: nothing is dropped silently)."""

    url: str
    stage: str
    reason: str  # a fixed vocabulary: download.fetch.Reason and download.images.ImageReason
    detail: str
    status: int | None  # the last HTTP status, if there was an answer
    attempts: int
    shard: int
    transient: bool  # worth fetching again later (--retry-failures)


@dataclass(slots=True, frozen=True)
class Duplicate:
    """A stored image that is the same picture as an earlier one (its canonical image)."""

    image_id: str
    url: str
    canonical_id: str
    canonical_url: str
    kind: Literal["identical", "near"]
    distance: int  # difference-hash bits between the two
