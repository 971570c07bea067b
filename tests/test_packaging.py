"""The design card's layout installs under the entitynet namespace only."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources


def test_subpackages_install_under_entitynet_and_nowhere_else(tmp_path):
    probe = (
        "import importlib.util as u\n"
        "import entitynet.builders, entitynet.training, entitynet.hub_cards, entitynet.configs\n"
        "print([u.find_spec(n) is None for n in ('builders', 'training', 'hub_cards', 'configs')])\n"
    )
    # From an unrelated folder, so the checkout itself is not on sys.path.
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True, True, True, True]"


def test_the_library_does_not_import_the_trainer_or_torch(tmp_path):
    probe = "import sys, entitynet.cli\nprint(sorted(m for m in ('torch', 'entitynet.training', 'transformers') if m in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_package_links_only_to_what_exists():
    from importlib import metadata

    from entitynet.http import user_agent

    described = metadata.metadata("entitynet")
    links = [described.get("Home-page") or "", *(described.get_all("Project-URL") or [])]
    assert not any("github.com/entitynet" in link for link in links), links  # no such repository
    assert "github.com/entitynet" not in user_agent("me@example.org")


def test_sample_graph_ships_with_the_package():
    sample = resources.files("entitynet.configs") / "samples" / "kg-sample.ttl"
    assert sample.is_file()
    assert "wikibase:sitelinks" in sample.read_text(encoding="utf-8")


def test_stages_learn_file_names_from_the_layout_not_from_each_other(tmp_path):
    """The CLI imports no stage; a stage imports no other stage's module, nor the remote clients
    of other stages (importing the download stage used to load the SPARQL and LLM clients)."""
    from entitynet import pipeline

    clients = {"entitynet.kg.sparql": "kg", "entitynet.enrich.llm": "enrich"}
    probe = (
        "import sys, importlib\n"
        "importlib.import_module(sys.argv[1])\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('entitynet'))))\n"
    )
    modules = [("entitynet.cli", None)] + [(entry.module, entry.name) for entry in pipeline.STAGES]
    # one fresh interpreter per module (what it loads is the point), all started at once
    probes = [subprocess.Popen([sys.executable, "-c", probe, module], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for module, _ in modules]
    for (module, owner), child in zip(modules, probes):
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        loaded = set(out.split())
        others = {entry.module for entry in pipeline.STAGES if entry.name != owner}
        assert not loaded & others, (module, loaded & others)
        assert not {name for name, stage in clients.items() if stage != owner} & loaded, (module, loaded)
