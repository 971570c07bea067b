"""The configuration of every stage: one small dataclass per concern, one YAML file for a run.

Layers, later ones winning: the preset of the domain (``configs/<domain>.yaml``, shipped with
the package), the user's ``--config`` file, ``--set key.sub=value`` pairs, then the stage's own
flags (``--endpoint``, ``--limit``, ...). ``load_config`` checks everything before any stage runs.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from entitynet.train_config import RunTrainConfig, ZeroShotSample, preset_file
from entitynet.typed_config import ConfigError, InvalidValue, Layers, option, require

DOMAINS = ("livingthings", "entitynet")
SOURCES = ("wikidata", "wordnet")
ENDPOINTS = {
    # QLever answers the transitive (P171+, P279*) queries the harvest needs in seconds.
    "qlever": "https://qlever.cs.uni-freiburg.de/api/wikidata",
    "wdqs": "https://query.wikidata.org/sparql",
}
_QID = re.compile(r"Q[1-9][0-9]*")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")
_SYNSET = re.compile(r"[^\s.][^\s]*\.[nvasr]\.[0-9]{2}")


def _all_match(pattern: re.Pattern[str], values: list[str]) -> bool:
    return all(pattern.fullmatch(value) for value in values)


_RETRY_HELP = {
    "max_attempts": "tries per request: 429/503 honour Retry-After; other 5xx, timeouts and broken connections back off",
    "backoff": "first retry wait in seconds; doubles per retry, with jitter",
    "max_wait": "longest single wait; a server asking for a longer Retry-After fails the request at once",
}


@dataclass
class RetryConfig:
    """How a remote client retries: the one retry configuration of the SPARQL, search, LLM and
    image clients (urllib3's Retry underneath, see http.py), checked here once for all of them.
    Each client's section inherits these keys (``kg.sparql.backoff``, ``download.backoff``, ...)."""

    max_attempts: int = option(5, _RETRY_HELP["max_attempts"])
    backoff: float = option(2.0, _RETRY_HELP["backoff"])
    max_wait: float = option(300.0, _RETRY_HELP["max_wait"])

    def __post_init__(self) -> None:
        require(self.max_attempts >= 1, "max_attempts", "must be at least 1")
        require(self.backoff >= 0, "backoff", "must not be negative")
        require(self.max_wait >= 0, "max_wait", "must not be negative")


@dataclass
class SparqlConfig(RetryConfig):
    max_attempts: int = option(6, _RETRY_HELP["max_attempts"])  # a harvest is long: more patience per page
    endpoint: str = option("qlever", "SPARQL endpoint: 'qlever', 'wdqs' or an http(s) URL", flag="--endpoint",
                           exclusive="sparql")
    dump: str | None = option(
        None,
        "Turtle or N-Triples file (.gz/.bz2 allowed) queried in-process with pyoxigraph instead of an endpoint",
        path=True, flag="--kg-dump", metavar="FILE", exclusive="sparql",
    )
    contact: str = option(
        "",
        "your e-mail or URL, sent in the User-Agent as Wikimedia's User-Agent policy asks",
        runtime=True, flag="--contact",
    )
    page_size: int = option(10_000, "most rows any single request may return")
    batch_size: int = option(1_000, "entities whose details are fetched in one request")
    timeout: float = option(120.0, "seconds a request may take before it counts as failed")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.endpoint in ENDPOINTS or self.endpoint.startswith(("http://", "https://")),
            "endpoint",
            f"must be one of {', '.join(ENDPOINTS)} or an http(s) URL, got {self.endpoint!r}",
        )
        require(
            "@" not in urlsplit(self.endpoint).netloc,
            "endpoint",
            "must not carry user:password (it would be written to RUN/config); use an endpoint without credentials",
        )
        require(self.page_size >= 1, "page_size", "must be at least 1")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.timeout > 0, "timeout", "must be positive")
        require(not any(c in self.contact for c in "\r\n"), "contact", "must be one line")

    @property
    def endpoint_url(self) -> str:
        return ENDPOINTS.get(self.endpoint, self.endpoint)


@dataclass
class WikidataConfig:
    mode: Literal["organisms", "classes"] = option(
        "organisms",
        "'organisms': taxa and things under the roots via P31/P279*, P279+ or P171+ (LivingThings); "
        "'classes': subclasses (P279*) of the roots, no instances (EntityNet)",
    )
    roots: list[str] = option(["Q729", "Q756", "Q764"], "root items (Q-ids) to harvest under, in order")
    living_roots: list[str] = option(
        ["Q729", "Q756", "Q764"], "roots whose entities get domain 'living' (animal, plant, fungus)"
    )
    exclude: list[str] = option(
        ["Q5", "Q24334299", "Q14897293", "Q795052"],
        "items excluded with everything that is an instance or subclass of them "
        "(human, mythical creature, fictional entity, individual animal)",
    )
    languages: list[str] = option(["en", "mul"], "label languages in order of preference")
    require_image: bool = option(True, "keep only entities with an image (P18), as the paper did")
    min_sitelinks: int = option(0, "drop entities with fewer sitelinks")
    ancestor_hops: int = option(3, "how far up (P31/P279/P171) natural-type candidates are collected")

    def __post_init__(self) -> None:
        require(bool(self.roots), "roots", "needs at least one Q-id")
        for key in ("roots", "living_roots", "exclude"):
            require(_all_match(_QID, getattr(self, key)), key, "every entry must be a Q-id like Q729")
        require(bool(self.languages), "languages", "needs at least one language")
        require(_all_match(_LANGUAGE, self.languages), "languages", "entries must be language codes like en, pt-br")
        require(self.min_sitelinks >= 0, "min_sitelinks", "must not be negative")
        require(1 <= self.ancestor_hops <= 3, "ancestor_hops", "must be 1, 2 or 3")


@dataclass
class WordnetConfig:
    roots: list[str] = option(["living_thing.n.01"], "synsets whose hyponyms are harvested")
    living_roots: list[str] = option(
        ["living_thing.n.01"], "synsets whose hyponyms get domain 'living'"
    )
    blacklist: list[str] = option(
        ["person.n.01", "microorganism.n.01", "cell.n.02", "monster.n.05"],
        "subtrees left out entirely",
    )
    data_dir: str | None = option(
        None,
        "folder holding corpora/wordnet (nltk layout); by default nltk's own paths, then Debian's "
        "/usr/share/wordnet", path=True,
    )

    def __post_init__(self) -> None:
        require(bool(self.roots), "roots", "needs at least one synset")
        for key in ("roots", "living_roots", "blacklist"):
            require(_all_match(_SYNSET, getattr(self, key)), key, "entries must be synset names like dog.n.01")


@dataclass
class KgConfig:
    sources: list[Literal["wikidata", "wordnet"]] = option(["wikidata", "wordnet"], "where entities come from",
                                                           flag="--sources", metavar="LIST")
    limit_per_root: int | None = option(
        None,
        "keep at most N entities per root and source: the top N by sitelinks (WordNet: by lemma frequency)",
        flag="--limit", metavar="N",
    )
    sparql: SparqlConfig = option(SparqlConfig, "how the SPARQL endpoint or dump is queried")
    wikidata: WikidataConfig = option(WikidataConfig, "what is harvested from Wikidata")
    wordnet: WordnetConfig = option(WordnetConfig, "what is harvested from WordNet")

    def __post_init__(self) -> None:
        require(bool(self.sources), "sources", "needs at least one of wikidata, wordnet")
        require(len(set(self.sources)) == len(self.sources), "sources", "lists a source twice")
        require(self.limit_per_root is None or self.limit_per_root >= 1, "limit_per_root", "must be at least 1")


@dataclass
class LlmConfig(RetryConfig):
    max_attempts: int = option(6, _RETRY_HELP["max_attempts"])
    max_wait: float = option(120.0, _RETRY_HELP["max_wait"])
    base_url: str = option(
        "http://127.0.0.1:8000/v1",
        "OpenAI-compatible endpoint (vLLM, TGI, llama.cpp, Ollama, OpenAI, https://router.huggingface.co/v1)",
    )
    model: str = option("Qwen/Qwen2.5-7B-Instruct", "model name the endpoint serves")
    api_key_env: str | None = option("OPENAI_API_KEY", "environment variable holding the API key (the key never goes in a file)")
    response_format: Literal["json_schema", "json_object", "none"] = option(
        "json_schema", "structured output the server supports: a JSON schema, JSON mode, or none (answers are checked anyway)"
    )
    temperature: float = option(0.0, "sampling temperature")
    max_tokens: int = option(1024, "longest answer")
    concurrency: int = option(8, "requests in flight at once", runtime=True)
    timeout: float = option(120.0, "seconds per request")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.base_url.startswith(("http://", "https://")), "base_url", "must be an http(s) URL")
        require("@" not in urlsplit(self.base_url).netloc, "base_url", "must not carry user:password")
        require(bool(self.model), "model", "must name a model")
        require(self.concurrency >= 1, "concurrency", "must be at least 1")
        require(self.max_tokens >= 1, "max_tokens", "must be at least 1")
        require(self.timeout > 0, "timeout", "must be positive")


@dataclass
class TransformersConfig:
    model: str = option("Qwen/Qwen2.5-0.5B-Instruct", "a local instruct model: Hub id or folder with a chat template")
    max_new_tokens: int = option(512, "longest answer")
    device: str = option("auto", "'auto' (GPU if there is one), 'cpu', 'cuda', 'cuda:1', ...")

    def __post_init__(self) -> None:
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")


Backend = Literal["kg", "llm", "transformers"]


@dataclass
class NaturalTypeConfig:
    chooser: Backend = option(
        "kg",
        "'kg': the documented offline rule (docs/ARCHITECTURE.md); 'llm': the endpoint of enrich.llm picks "
        "among the candidates; 'transformers': the local model of enrich.transformers does",
    )
    ask_visual: bool = option(False, "also ask the model whether the entity is visual; non-visual ones are dropped (EntityNet)")
    generic: list[str] = option(
        [
            "entity", "object", "physical object", "concept", "class", "taxon", "organism", "living thing",
            "whole", "physical entity", "abstraction", "group", "thing", "item", "unit", "artifact",
            "Q35120", "Q223557", "Q151885", "Q16889133", "Q16521", "Q7239", "Q488383",
        ],
        "over-generic classes never chosen: labels (any case) or ids (Q-ids, wn:synsets)",
    )
    max_candidates: int = option(10, "candidates kept per entity (ranked by sitelinks)")
    min_sitelinks: int = option(20, "popularity a Wikidata class needs to be chosen before a less popular, nearer one")
    root_types: dict[str, str] = option(
        {
            "Q729": "animal", "Q756": "plant", "Q764": "fungus", "Q34379": "musical instrument",
            "Q41176": "building", "Q42889": "vehicle", "Q2095": "food", "Q14745": "furniture",
            "Q11460": "clothing", "Q747883": "physical activity", "Q10683158": "substance", "Q712378": "organ",
            "Q15324": "body of water", "Q39546": "tool", "Q618123": "geographical feature",
            "Q214609": "material", "Q25257": "precipitation", "Q13226383": "facility",
            "Q811979": "architectural structure", "Q4936952": "anatomical structure", "Q2424752": "product",
            "Q11663": "weather", "wn:living_thing.n.01": "living thing",
        },
        "natural type of last resort, by the root an entity was harvested under",
    )

    def __post_init__(self) -> None:
        require(self.max_candidates >= 1, "max_candidates", "must be at least 1")
        require(self.min_sitelinks >= 0, "min_sitelinks", "must not be negative")


@dataclass
class AttributesConfig:
    backend: Backend = option(
        "kg",
        "'kg': the entity's statements about looks plus a vocabulary chosen by natural type and domain; "
        "'llm' / 'transformers': asked of enrich.llm / enrich.transformers with few-shot prompts",
    )
    top_k_per_root: int = option(500, "only the top K entities per root (by sitelinks) get attributes; the paper used 500",
                                 flag="--top-k", metavar="K")
    max_per_category: int = option(10, "attributes kept per entity and category")
    vocabulary: str | None = option(
        None, "YAML vocabulary of generic visual attributes (default: the one shipped, enrich/vocabulary.yaml)", path=True
    )

    def __post_init__(self) -> None:
        require(self.top_k_per_root >= 0, "top_k_per_root", "must not be negative")
        require(self.max_per_category >= 1, "max_per_category", "must be at least 1")


@dataclass
class EnrichConfig:
    natural_type: NaturalTypeConfig = option(NaturalTypeConfig, "how each entity's natural type is chosen")
    attributes: AttributesConfig = option(AttributesConfig, "which visual attributes entities get")
    llm: LlmConfig = option(LlmConfig, "the OpenAI-compatible endpoint of the 'llm' backends")
    transformers: TransformersConfig = option(TransformersConfig, "the local model of the 'transformers' backends")


@dataclass
class QueriesConfig:
    kinds: list[Literal["noun", "attr", "attrnoun", "wordnet-noun"]] = option(
        ["noun", "attr", "attrnoun", "wordnet-noun"], "query kinds to make (arXiv 2505.02746, section 3)"
    )
    max_words: int = option(12, "longer texts are dropped (counted): engines truncate them anyway")

    def __post_init__(self) -> None:
        require(bool(self.kinds), "kinds", "needs at least one kind")
        require(self.max_words >= 1, "max_words", "must be at least 1")


@dataclass
class CommonsConfig:
    api_url: str = option("https://commons.wikimedia.org/w/api.php", "MediaWiki API of Wikimedia Commons")
    thumb_width: int = option(512, "width of the thumbnail URL asked for, so fewer bytes are fetched (0: originals)")
    page_size: int = option(50, "results per API request (the API allows 50 without a bot flag)")
    min_interval: float = option(1.0, "seconds between requests: Wikimedia asks for serial, polite clients", runtime=True)

    def __post_init__(self) -> None:
        require(self.api_url.startswith(("http://", "https://")), "api_url", "must be an http(s) URL")
        require(self.thumb_width >= 0, "thumb_width", "must not be negative")
        require(1 <= self.page_size <= 500, "page_size", "must be between 1 and 500")
        require(self.min_interval >= 0, "min_interval", "must not be negative")


@dataclass
class GoogleConfig:
    url: str = option("https://www.googleapis.com/customsearch/v1", "Custom Search JSON API endpoint")
    key_env: str = option("GOOGLE_API_KEY", "environment variable holding the API key")
    cx_env: str = option("GOOGLE_CSE_ID", "environment variable holding the search engine id (cx)")
    exclude_terms: list[str] = option(["drawing", "clipart", "illustration", "cartoon"], "words results must not contain")
    image_type: str = option("photo", "imgType: photo, clipart, lineart, face, news, stock, animated, or '' for any")


@dataclass
class BraveConfig:
    url: str = option("https://api.search.brave.com/res/v1/images/search", "Brave image search endpoint")
    token_env: str = option("BRAVE_API_KEY", "environment variable holding the subscription token")


@dataclass
class PoolConfig:
    path: str | None = option(None, "parquet file, webdataset .tar, or a folder of them, with url and text", path=True,
                              flag="--pool", metavar="PATH")
    url_column: str | None = option(None, "url column of parquet pools (default: the first of url, URL, image_url)")
    text_column: str | None = option(None, "text column (default: the first of text, caption, TEXT, alt, alt_text)")
    max_per_entity: int = option(20_000, "MetaCLIP balancing: at most about this many matches per entity")
    seed: int = option(0, "seed of the balancing draw")

    def __post_init__(self) -> None:
        require(self.max_per_entity >= 1, "max_per_entity", "must be at least 1")


INATURALIST_LICENSES = ("CC0", "CC-BY", "CC-BY-NC", "CC-BY-SA", "CC-BY-ND", "CC-BY-NC-SA", "CC-BY-NC-ND")
INATURALIST_SIZES = ("original", "large", "medium", "small", "thumb", "square")
INATURALIST_GRADES = ("research", "needs_id", "casual")


@dataclass
class InaturalistConfig:
    metadata: str | None = option(
        None, "folder or http(s) URL prefix holding taxa, observations, photos and observers .csv.gz "
        "(iNaturalist's open data: the root of https://inaturalist-open-data.s3.amazonaws.com)", path=True)
    photo_url: str = option(
        "https://inaturalist-open-data.s3.amazonaws.com/photos/{photo_id}/{size}.{extension}",
        "template of a photo's URL: {photo_id}, {size} and {extension} are filled in")
    size: Literal["original", "large", "medium", "small", "thumb", "square"] = option(
        "medium", "photo size fetched: original, large (1024 px), medium (500 px), small, thumb, square")
    licenses: list[str] = option(
        ["CC0", "CC-BY", "CC-BY-SA"], "licences kept (commercial use allowed by default; add NC ones only when asked)")
    quality_grades: list[str] = option(["research"], "observation quality grades kept: research, needs_id, casual")
    per_entity: int = option(100, "at most this many photos per entity, drawn with the seed, distinct observers first")
    descendants: bool = option(True, "a genus or family entity takes its descendants' observations, balanced across its children")
    seed: int = option(0, "seed of the per-entity draw")
    index: str | None = option(
        None, "folder of the prepared index (parquet made from the .csv.gz once); default RUN/cache/search/inaturalist/index",
        path=True, runtime=True)
    memory_limit: str = option("1GB", "DuckDB's memory limit for the join; it spills to disk beyond it", runtime=True)

    def __post_init__(self) -> None:
        for name in ("{photo_id}", "{size}", "{extension}"):
            require(name in self.photo_url, "photo_url", f"must contain {name}")
        unknown = [value for value in self.licenses if value not in INATURALIST_LICENSES]
        require(not unknown, "licenses", f"unknown licence {unknown}; iNaturalist's are {', '.join(INATURALIST_LICENSES)}")
        require(bool(self.licenses), "licenses", "needs at least one licence")
        grades = [value for value in self.quality_grades if value not in INATURALIST_GRADES]
        require(not grades, "quality_grades", f"unknown grade {grades}; one of {', '.join(INATURALIST_GRADES)}")
        require(bool(self.quality_grades), "quality_grades", "needs at least one grade")
        require(self.per_entity >= 1, "per_entity", "must be at least 1")


@dataclass
class SearchConfig(RetryConfig):
    engine: Literal["commons", "google", "brave", "pool", "inaturalist"] = option("commons", "where candidates come from", flag="--engine")
    per_query: int = option(50, "candidates asked per query", flag="--per-query", metavar="N")
    kinds: list[Literal["noun", "attr", "attrnoun", "wordnet-noun"]] = option(
        ["noun", "attr", "attrnoun", "wordnet-noun"], "query kinds to search"
    )
    max_queries: int | None = option(None, "search only the first N queries (a trial run)")
    queries_per_part: int = option(500, "queries per RUN/candidates/part-NNNNN.parquet, the unit of resume")
    contact: str = option("", "your e-mail or URL, sent in the User-Agent", runtime=True, flag="--contact")
    timeout: float = option(30.0, "seconds per request")
    commons: CommonsConfig = option(CommonsConfig, "the commons engine")
    google: GoogleConfig = option(GoogleConfig, "the google engine")
    brave: BraveConfig = option(BraveConfig, "the brave engine")
    pool: PoolConfig = option(PoolConfig, "the pool engine")
    inaturalist: InaturalistConfig = option(InaturalistConfig, "the inaturalist engine: iNaturalist's open data joined by taxon")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.per_query >= 1, "per_query", "must be at least 1")
        require(bool(self.kinds), "kinds", "needs at least one kind")
        require(self.max_queries is None or self.max_queries >= 1, "max_queries", "must be at least 1")
        require(self.queries_per_part >= 1, "queries_per_part", "must be at least 1")
        require(self.timeout > 0, "timeout", "must be positive")
        require(self.engine != "pool" or self.pool.path is not None, "pool.path", "the pool engine needs a pool")
        require(self.engine != "inaturalist" or self.inaturalist.metadata is not None, "inaturalist.metadata",
                "the inaturalist engine needs the folder or URL prefix of iNaturalist's metadata files")


@dataclass
class DownloadConfig(RetryConfig):
    max_attempts: int = option(3, "tries per URL for transient failures (timeouts, resets, 429, 5xx, truncated bodies)")  # images are many: give up sooner
    backoff: float = option(1.0, _RETRY_HELP["backoff"])
    max_wait: float = option(30.0, _RETRY_HELP["max_wait"])
    urls_per_shard: int = option(1000, "URLs per shard, the unit of work and of resume")
    processes: int = option(1, "worker processes on this machine (each with its own thread pool)", runtime=True,
                            flag="--processes", metavar="N")
    threads: int = option(32, "concurrent downloads per process", runtime=True)
    per_host: int = option(4, "concurrent downloads per host, whatever the thread count", runtime=True)
    connect_timeout: float = option(10.0, "seconds to connect")
    read_timeout: float = option(20.0, "seconds between bytes; the whole body gets three times that")
    max_bytes: int = option(20_000_000, "largest response accepted")
    max_redirects: int = option(5, "redirects followed")
    allow_private_addresses: bool = option(
        False, "fetch from private, loopback and link-local addresses (tests and intranet pools only)",
        flag="--allow-private-addresses",
    )
    allowed_networks: list[str] = option([], "networks (CIDR) exempt from the address guard, e.g. [10.1.2.0/24]")
    honour_opt_out: bool = option(True, "skip responses with X-Robots-Tag noai, noimageai, noindex or noimageindex")
    max_side: int = option(512, "longest side after resizing (only shrinks)")
    min_side: int = option(64, "images with a shorter side are dropped (too_small)")
    max_aspect: float = option(3.0, "images longer than this ratio are dropped (bad_aspect)")
    max_pixels: int = option(89_478_485, "larger images are refused before decoding (decompression_bomb)")
    format: Literal["jpeg", "webp"] = option("jpeg", "stored encoding")
    quality: int = option(90, "encoder quality")
    dedup_distance: int = option(4, "difference-hash bits within which two images are the same picture (0: identical only)")
    contact: str = option("", "your e-mail or URL, sent in the User-Agent", runtime=True, flag="--contact")

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("urls_per_shard", "processes", "threads", "per_host", "max_bytes", "max_side", "min_side"):
            require(getattr(self, key) >= 1, key, "must be at least 1")
        require(self.connect_timeout > 0 and self.read_timeout > 0, "read_timeout", "timeouts must be positive")
        require(self.max_redirects >= 0, "max_redirects", "must not be negative")
        require(self.max_aspect >= 1, "max_aspect", "must be at least 1")
        require(1 <= self.quality <= 100, "quality", "must be between 1 and 100")
        require(0 <= self.dedup_distance <= 16, "dedup_distance", "must be between 0 and 16")
        require(self.min_side <= self.max_side, "min_side", "must not exceed max_side")
        for network in self.allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise InvalidValue("allowed_networks", f"{network!r} is not a network like 10.0.0.0/8") from None


@dataclass
class BuildConfig:
    validation_fraction: float = option(0.05, "share of entities (not images) in the validation split")
    test_fraction: float = option(0.05, "share of entities in the test split")
    seen_test_fraction: float = option(
        0.01, "share of the train split's images held out as test_seen: images of entities the model trains on "
        "(an entity's last train image is never taken), to measure what it learnt beside test's unseen entities")
    seed: int = option(0, "seed of the split draw")
    num_proc: int = option(1, "processes the datasets builder uses", runtime=True, flag="--num-proc", metavar="N")
    max_shard_size: str = option("500MB", "largest parquet shard of the dataset")
    exclude_near: str | None = option(
        None, "decontamination: a folder of images or parquet files (an evaluation set) to keep out", path=True,
        flag="--exclude-near", metavar="DIR",
    )
    exclude_distance: int = option(4, "difference-hash bits within which an image counts as the evaluation image")
    repo_id: str = option("ORG/NAME", "the Hub repository the card's code examples name", flag="--repo", metavar="ORG/NAME")
    pretty_name: str = option("", "the card's title (default: EntityNet or LivingThings)")
    sample_images: int = option(16, "images in the card's picture grid")
    homepage: str = option("", "the web page the card links the tool to (an http(s) URL); empty: the card cites the paper only")

    def __post_init__(self) -> None:
        require(0 <= self.validation_fraction < 1 and 0 <= self.test_fraction < 1, "test_fraction", "fractions are between 0 and 1")
        require(self.validation_fraction + self.test_fraction < 1, "test_fraction", "validation + test must leave room for train")
        require(0 <= self.seen_test_fraction < 1, "seen_test_fraction", "is a share between 0 and 1")
        require(self.num_proc >= 1, "num_proc", "must be at least 1")
        require(re.fullmatch(r"\d+(KB|MB|GB)", self.max_shard_size) is not None, "max_shard_size", "like 500MB or 2GB")
        require(0 <= self.exclude_distance <= 16, "exclude_distance", "must be between 0 and 16")
        require(re.fullmatch(r"[\w.-]+/[\w.-]+", self.repo_id) is not None, "repo_id", "must look like ORG/NAME")
        require(self.sample_images >= 0, "sample_images", "must not be negative")
        require(not self.homepage or self.homepage.startswith(("http://", "https://")), "homepage", "must be an http(s) URL or empty")


@dataclass
class EvalStageConfig(ZeroShotSample):
    """`entitynet run`'s eval stage: the trained model on the dataset's held-out splits (and, if
    named, a benchmark suite), written to RUN/eval/ and summary.json. Its template and sample are
    the trainer's evaluation's (one schema, ``ZeroShotSample``), with the stage's own defaults."""

    enabled: bool = option(True, "evaluate the trained model (needs entitynet[train])")
    template: str = option("a photo of a {name}.", "how an entity is named for zero-shot classification; fields: "
                                                   "{name}, {natural_type}, {description}")
    max_images: int = option(5_000, "images per split at most (a seeded sample across entities)")
    batch_size: int = option(64, "images per forward pass", runtime=True)
    suite: str | None = option(None, "also run a named benchmark suite of `entitynet eval` (e.g. paper; needs the Hub)")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.batch_size >= 1, "batch_size", "must be at least 1")


@dataclass
class PushConfig:
    """`entitynet run`'s push stage, which runs only when a repository is named (HF_TOKEN or the
    saved login; the token is never written or printed)."""

    dataset_repo: str | None = option(None, "push RUN/dataset to this Hub dataset repository (ORG/NAME)")
    model_repo: str | None = option(None, "push RUN/model to this Hub model repository (ORG/NAME)")
    private: bool = option(False, "create the repositories private")

    def __post_init__(self) -> None:
        for key in ("dataset_repo", "model_repo"):
            value = getattr(self, key)
            require(value is None or re.fullmatch(r"[\w.-]+/[\w.-]+", value) is not None, key, "must look like ORG/NAME")


@dataclass
class Config:
    domain: Literal["livingthings", "entitynet"] = option("livingthings", "which dataset this run makes")
    kg: KgConfig = option(KgConfig, "the kg stage")
    enrich: EnrichConfig = option(EnrichConfig, "the enrich stage: natural types and visual attributes")
    queries: QueriesConfig = option(QueriesConfig, "the queries stage")
    search: SearchConfig = option(SearchConfig, "the search stage")
    download: DownloadConfig = option(DownloadConfig, "the download stage")
    build: BuildConfig = option(BuildConfig, "the build stage: the Hugging Face dataset and its card")
    train: RunTrainConfig = option(RunTrainConfig, "the train stage (entitynet run): CLIP on the dataset, with the "
                                   "trainer's keys (train.max_steps, train.optimizer.learning_rate, ...) on its preset")
    eval: EvalStageConfig = option(EvalStageConfig, "the eval stage (entitynet run): the model on the held-out splits")
    push: PushConfig = option(PushConfig, "the push stage (entitynet run): dataset and model to the Hub, when named")

    def __post_init__(self) -> None:
        require(self.train.dataset_config == self.domain, "train.dataset_config",
                f"the run trains on its own domain's configuration ({self.domain}): leave it unset")


def preset_path(name: str) -> Path | None:
    """A config shipped with the package (``configs/<name>.yaml``), or None."""
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        return None
    candidate = resources.files("entitynet.configs") / f"{name}.yaml"
    return Path(str(candidate)) if candidate.is_file() else None


def preset_names() -> list[str]:
    folder = resources.files("entitynet.configs")
    return sorted(item.name[: -len(".yaml")] for item in folder.iterdir() if item.name.endswith(".yaml"))


def load_config(
    config: str | None = None,
    domain: str | None = None,
    assignments: list[str] | None = None,
    flags: dict[str, tuple[str, Any]] | None = None,
) -> Config:
    """Resolve the layers into one checked ``Config``.

    ``config`` is a YAML file or the name of a shipped config (``demo``). The domain comes from
    ``domain``, else the file's ``domain:``, else livingthings; its preset is the base layer.
    ``flags`` maps a command-line flag to the dotted key it sets and its value (None: not given).
    """
    file_path = None
    if config is not None:
        file_path = Path(config)
        if not file_path.is_file():
            file_path = preset_path(config)
            if file_path is None:
                choices = ", ".join(preset_names())
                raise ConfigError(f"--config: {config}: no such file, nor a shipped config ({choices})")
    user = Layers(Config)
    if file_path is not None:
        user.add_file(file_path)
    chosen = domain or user.data.get("domain", "livingthings")
    if chosen not in DOMAINS:
        where = "--domain" if domain else user.origin_of("domain")
        raise ConfigError(f"{where}: domain: must be one of {', '.join(DOMAINS)}, got {chosen!r}")
    preset = preset_path(chosen)
    if preset is None:  # pragma: no cover - a packaging error
        raise ConfigError(f"the {chosen} preset is missing from the installed package")

    def run_layers(layers: Layers) -> Layers:
        layers.add_file(preset, origin=f"preset {preset.name}")
        if file_path is not None:
            layers.add_file(file_path)
        if domain:
            layers.add({"domain": domain}, "--domain")
        layers.add_assignments(assignments or [])
        for flag, (key, value) in (flags or {}).items():
            if value is not None:
                layers.add_value(key, value, flag)
        return layers

    # The trainer's keys lie on its preset (train.preset, as the layers above leave it): a first
    # pass finds it, the second puts it beneath them, so every value says where it came from.
    found = run_layers(Layers(Config))
    trainer = found.data.get("train") if isinstance(found.data.get("train"), dict) else {}
    for old in ("config", "set"):
        if old in trainer:
            raise ConfigError(
                f"{found.origin_of(f'train.{old}')}: train.{old}: the run's train section is the trainer's configuration "
                "itself now: name its base in train.preset (tiny, livingthings-vit-b-32, entitynet-vit-b-32 or a YAML "
                "file) and set its keys under train (train.max_steps: 2000, or --set train.optimizer.learning_rate=0.0001)")
    name = trainer.get("preset", _field_default(RunTrainConfig, "preset"))
    layers = Layers(Config)
    layers.add({"train": {"dataset_config": found.data.get("domain", "livingthings")}}, "domain")
    if isinstance(name, str):  # else the schema names the wrong type, with its origin
        try:
            trainer_preset = preset_file(name)
        except ConfigError as error:
            raise ConfigError(f"{found.origin_of('train.preset')}: train.preset: {error}") from None
        try:
            loaded = yaml.safe_load(trainer_preset.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{trainer_preset}: cannot read it as YAML: {error}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{trainer_preset}: expected a mapping of the trainer's keys at the top level")
        layers.add({"train": loaded}, f"train preset {trainer_preset.name}", base_dir=trainer_preset.resolve().parent)
    return run_layers(layers).build()


def _field_default(schema: type, name: str) -> Any:
    return next(item.default for item in fields(schema) if item.name == name)


__all__ = [
    "Config",
    "RetryConfig",
    "ConfigError",
    "DOMAINS",
    "ENDPOINTS",
    "KgConfig",
    "SOURCES",
    "SparqlConfig",
    "WikidataConfig",
    "WordnetConfig",
    "load_config",
    "preset_names",
    "preset_path",
]
