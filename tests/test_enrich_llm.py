"""The LLM backends of the enrich stage against a loopback OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_llm import FakeLLM, error
from helpers import skip_or_fail

from entitynet.cli import main
from entitynet.records import Ancestor, Entity
from entitynet.rundir import RunDir
from entitynet.tables import entity_writer, read_rows

ANIMALS = ["zebra", "okapi", "tapir", "quagga", "cheetah", "gnu", "ibex", "eland"]


def make_run(folder: Path, names: list[str]) -> RunDir:
    """A run whose kg stage is done: one animal per name, under Q729, with two candidates."""
    run = RunDir(folder)
    with entity_writer(run.path("entities.parquet")) as writer:
        for number, name in enumerate(names, start=1):
            writer.write(Entity(
                id=f"Q{number}", source="wikidata", name=name, domain="living", root="Q729", sitelinks=100 - number,
                ancestors=[Ancestor("Q7377", "mammal", 230, 2), Ancestor("Q42", "ungulate", 80, 1)],
            ))
    run.run_stage("kg", {"made": "by hand"}, [], lambda: {})
    return run


def attributes_json(name: str, per_category: int = 2, query_name: str | None = None) -> str:
    shown = query_name or name
    return json.dumps({
        "color": [{"attribute": f"tone {i}", "query": f"tone {i} {shown}"} for i in range(per_category)],
        "behavior": [{"attribute": "grazing", "query": f"{name} grazing"}],
    })


class Script:
    """What the loopback model answers, per entity: every case of issue 3's acceptance list."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, question):
        name = question["entity"]
        if "candidates" in question:  # natural type
            if name == "okapi":
                return json.dumps({"natural_type": "giraffe"})  # not a candidate
            return json.dumps({"natural_type": "ungulate"})
        self.calls[name] += 1
        if name == "zebra":
            return attributes_json(name)
        if name == "okapi":
            return "```json\n" + attributes_json(name) + "\n```"
        if name == "tapir":
            return "Sure! Here are the attributes:\n" + attributes_json(name) + "\nHope this helps."
        if name == "quagga":
            return attributes_json(name)[:40]  # truncated
        if name == "cheetah":
            return json.dumps({"color": [{"attribute": "spotted", "query": "spotted leopard"},
                                         {"attribute": "golden", "query": "golden cheetah"}]})
        if name == "gnu":
            return attributes_json(name, per_category=20)
        if name == "ibex":
            return error(429, "rate limited", retry_after="1") if self.calls[name] == 1 else attributes_json(name)
        if name == "eland":
            return error(500, "overloaded") if self.calls[name] <= 3 else attributes_json(name)
        return attributes_json(name)


def llm_args(run: RunDir, server: FakeLLM, *extra: str) -> list[str]:
    return [
        "enrich", "--run", str(run.root), "--config", "demo",
        "--set", "enrich.natural_type.chooser=llm", "--set", "enrich.attributes.backend=llm",
        "--set", f"enrich.llm.base_url={server.base_url}", "--set", "enrich.llm.model=loopback-7b",
        "--set", "enrich.llm.backoff=0.01", "--set", "enrich.llm.concurrency=4",
        "--set", "enrich.attributes.max_per_category=10", *extra,
    ]


@pytest.fixture
def served():
    started = []

    def start(script, latency: float = 0.0) -> FakeLLM:
        server = FakeLLM(script, latency)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def test_every_answer_shape_ends_as_a_repair_or_a_counted_drop(tmp_path, served, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-1234567890")
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # the choice of plain HTTP: works on offline clusters
    run = make_run(tmp_path / "run", ANIMALS)
    server = served(Script())
    assert main(llm_args(run, server)) == 0
    attributes = list(read_rows(run.path("attributes.parquet")))
    by_entity = Counter(a["entity_id"] for a in attributes)
    names = {f"Q{i}": name for i, name in enumerate(ANIMALS, start=1)}
    got = {names[q]: n for q, n in by_entity.items()}
    assert got == {"zebra": 3, "okapi": 3, "tapir": 3, "cheetah": 1, "gnu": 11, "ibex": 3, "eland": 3}  # quagga: none
    assert all(a["backend"] == f"llm:loopback-7b@http://127.0.0.1:{server.server_address[1]}/v1" for a in attributes)
    assert all(names[a["entity_id"]] in a["query"] for a in attributes)

    stats = json.loads(run.marker("enrich").read_text())["stats"]
    answers = stats["llm"]["answers"]
    assert answers["repaired_fence"] == 1 and answers["repaired_prose_around_json"] == 1
    assert answers["dropped_unparseable"] == 1 and answers["dropped_query_without_name"] == 1
    assert answers["cut_over_limit"] == 10 and answers["dropped_not_a_candidate"] == 1
    model = stats["llm"]["models"]["llm"]
    assert model["http"]["errors"] == {"http_429": 1, "http_500": 3} and model["http"]["retries"] == 4
    assert model["prompt_tokens"] > 0 and model["completion_tokens"] > 0
    types = {row["entity_id"]: row for row in read_rows(run.path("natural_types.parquet"))}
    assert types["Q1"]["natural_type"] == "ungulate" and types["Q1"]["reason"] == "model"
    assert types["Q2"]["reason"].endswith("_after_invalid_answer")  # okapi: the rule decided instead
    assert "answers:" in capsys.readouterr().out

    # The key went in the Authorization header and nowhere else.
    for path in run.root.rglob("*"):
        if path.is_file():
            assert b"sk-test-not-a-real-key" not in path.read_bytes(), path

    # A second run makes no HTTP call at all and gives the same output.
    before = len(server.requests)
    assert main([*llm_args(run, server), "--force"]) == 0
    assert len(server.requests) == before
    assert list(read_rows(run.path("attributes.parquet"))) == attributes
    assert json.loads(run.marker("enrich").read_text())["stats"]["llm"]["models"]["llm"]["calls"] == 0


def test_a_finished_enrich_rerun_with_another_concurrency_asks_nothing(tmp_path, served, capsys):
    run = make_run(tmp_path / "run", ANIMALS[:3])
    server = served(Script())
    assert main(llm_args(run, server)) == 0
    asked = len(server.requests)
    capsys.readouterr()
    assert main(llm_args(run, server, "--set", "enrich.llm.concurrency=2")) == 0
    assert "enrich: already complete" in capsys.readouterr().out
    assert len(server.requests) == asked


def test_an_endless_storm_drops_nothing_silently_and_stops(tmp_path, served, capsys):
    run = make_run(tmp_path / "run", ["zebra", "eland"])
    server = served(lambda question: error(503, "down"))
    code = main(llm_args(run, server, "--set", "enrich.llm.max_attempts=2"))
    assert code == 1
    err = capsys.readouterr().err
    assert "gave up after 2 attempts: HTTP 503" in err and "loopback-7b" in err
    assert not run.path("attributes.parquet").exists()


def test_a_bad_key_is_reported_without_the_key(tmp_path, served, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-0000000000000000")
    run = make_run(tmp_path / "run", ["zebra"])
    server = served(lambda question: error(401, "invalid api key"))
    assert main(llm_args(run, server)) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "$OPENAI_API_KEY" in err and "sk-wrong" not in err
    assert len(server.requests) == 1  # not retried


def test_non_visual_entities_are_dropped_and_counted(tmp_path, served):
    run = make_run(tmp_path / "run", ["zebra", "justice"])
    visual = {"zebra": True, "justice": False}
    server = served(lambda q: json.dumps({"natural_type": "ungulate", "visual": visual[q["entity"]]})
                    if "candidates" in q else attributes_json(q["entity"]))
    assert main(llm_args(run, server, "--set", "enrich.natural_type.ask_visual=true")) == 0
    stats = json.loads(run.marker("enrich").read_text())["stats"]
    assert stats["natural_types"]["non_visual"] == 1
    assert {a["entity_id"] for a in read_rows(run.path("attributes.parquet"))} == {"Q1"}
    assert main(["-q", "queries", "--run", str(run.root), "--config", "demo"]) == 0
    uses = [u for row in read_rows(run.path("queries.parquet")) for u in row["uses"]]
    assert {u["entity_id"] for u in uses} == {"Q1"}
    assert json.loads(run.marker("queries").read_text())["stats"]["dropped"] == {"non_visual_entity": 1}


def test_kill_9_mid_run_then_rerun_asks_no_answered_prompt_again(tmp_path, served):
    names = [f"animal {i}" for i in range(40)]
    answered: dict[str, float] = {}

    def script(q):
        reply = json.dumps({"natural_type": "ungulate"}) if "candidates" in q else attributes_json(q["entity"])
        answered[json.dumps(q, sort_keys=True)] = time.monotonic() + 0.001
        return reply

    slow = served(script, latency=0.1)
    reference = make_run(tmp_path / "reference", names)
    assert main(llm_args(reference, slow)) == 0  # uninterrupted, same server
    answered.clear()

    run = make_run(tmp_path / "run", names)
    child = subprocess.Popen([sys.executable, "-m", "entitynet", "-q", *llm_args(run, slow)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(answered) < 30 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    child.wait(timeout=10)
    assert 30 <= len(answered) < 80, "the kill should land mid-run"
    settled = {key for key, at in answered.items() if at < killed_at - 0.2}  # answered well before the kill
    first_requests = len(slow.requests)

    assert main(llm_args(run, slow)) == 0
    asked_again = [json.dumps(_question(r), sort_keys=True) for r in slow.requests[first_requests:]]
    assert not settled & set(asked_again), "an answer received before the kill was requested again"
    assert list(read_rows(run.path("attributes.parquet"))) == list(read_rows(reference.path("attributes.parquet")))
    assert list(read_rows(run.path("natural_types.parquet"))) == list(read_rows(reference.path("natural_types.parquet")))


def _question(request: dict) -> object:
    return json.loads(request["messages"][-1]["content"].split("\n")[0])


def tiny_chat_model(folder: Path) -> Path:
    """A randomly initialised causal LM with a byte-level BPE tokenizer and a chat template."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    except ImportError as missing:
        skip_or_fail(f"the train extra is not installed: {missing}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = ["zebra okapi tapir natural type ungulate mammal json attributes color query"] * 50
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"]))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    wrapped.chat_template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}"
    config = LlamaConfig(vocab_size=len(wrapped), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=wrapped.bos_token_id, eos_token_id=wrapped.eos_token_id, pad_token_id=wrapped.pad_token_id)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    wrapped.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_transformers_backend_turns_gibberish_into_counted_drops(tmp_path):
    model = tiny_chat_model(tmp_path / "tiny-model")
    run = make_run(tmp_path / "run", ["zebra", "okapi"])
    args = ["-q", "enrich", "--run", str(run.root), "--config", "demo",
            "--set", "enrich.natural_type.chooser=transformers", "--set", "enrich.attributes.backend=transformers",
            "--set", f"enrich.transformers.model={model}", "--set", "enrich.transformers.max_new_tokens=24",
            "--set", "enrich.transformers.device=cpu"]
    assert main(args) == 0
    stats = json.loads(run.marker("enrich").read_text())["stats"]
    model_stats = stats["llm"]["models"]["transformers"]
    assert model_stats["calls"] == 4 and model_stats["completion_tokens"] > 0
    drops = {k: v for k, v in stats["llm"]["answers"].items() if k.startswith("dropped")}
    assert sum(drops.values()) >= 4  # two natural types and two attribute answers, all gibberish
    types = list(read_rows(run.path("natural_types.parquet")))
    assert all(t["natural_type"] and t["reason"].endswith("_after_invalid_answer") for t in types)
    assert stats["attributes"]["total"] == 0
    assert main([*args, "--force"]) == 0  # cached: same answers, no generation
    assert json.loads(run.marker("enrich").read_text())["stats"]["llm"]["models"]["transformers"]["calls"] == 0
