"""The converter against the real open_clip: benchmarks/open_clip_parity.py with the issue's models
(ViT-B-32 at context 32, ViT-B-32-quickgelu), where an open_clip venv exists.

open_clip is never a dependency: the script runs it in its own interpreter, found at
``ENTITYNET_OPEN_CLIP_PYTHON`` or ``../peer/bin/python`` beside the checkout (../shared/ENVIRONMENT.md
says how to make one). Without it this test skips, in CI too: the peer is an optional check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PEER = Path(os.environ.get("ENTITYNET_OPEN_CLIP_PYTHON", REPO.parent / "peer" / "bin" / "python"))
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.mark.slow
def test_converted_models_match_the_real_open_clip(tmp_path):
    pytest.importorskip("torch")
    if not PEER.exists() or subprocess.run([str(PEER), "-c", "import open_clip"], capture_output=True).returncode:
        pytest.skip(f"no open_clip venv at {PEER} (set ENTITYNET_OPEN_CLIP_PYTHON)")
    if not REALDATA.is_dir():
        pytest.skip(f"shared real data not found at {REALDATA}")
    out = tmp_path / "parity.json"
    # 200 of the 1,000 alt texts keep it to a few minutes; the recorded benchmark run uses all of them
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "open_clip_parity.py"), "--alt-texts", "200", "--out", str(out)],
                   check=True, cwd=tmp_path, capture_output=True)
    results = json.loads(out.read_text())["results"]
    converted = [r for r in results if "@" in r["model"]]
    assert [(r["model"], r["context_length"], r["activation"]) for r in converted] == [
        ("ViT-B-32@32", 32, "gelu"), ("ViT-B-32-quickgelu@77", 77, "quick_gelu")]
    for r in converted:
        assert r["texts_identical_ids"] == r["texts"] and r["padding_is_open_clips_0"]
        for key in ("model_text_max_abs_diff", "model_image_max_abs_diff", "tokenizer_text_max_abs_diff",
                    "processor_image_max_abs_diff_rgb", "round_trip_embedding_max_abs_diff"):
            assert r[key] <= 1e-4, (r["model"], key, r[key])
        assert r["processor_pixel_max_abs_diff_by_mode"]["RGB"] == 0.0
        assert r["pipeline_probability_max_abs_diff"] <= 1e-3
        assert r["round_trip_tensors_identical"] and r["round_trip_ids_identical"]
    assert converted[0]["checkpoint_conversion_identical"]
    trained = results[-1]
    assert trained["model_text_max_abs_diff"] <= 1e-4 and trained["model_image_max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_a_model_trained_here_gets_the_same_ids_and_embeddings_in_open_clip(tmp_path):
    """issue 17, item 9: after to-open-clip, open_clip's HFTokenizer cleans a text (whitespace, HTML)
    before our tokenizer sees it; ours cleans the same way, so both sides give the same ids."""
    torch = pytest.importorskip("torch")
    if not PEER.exists() or subprocess.run([str(PEER), "-c", "import open_clip"], capture_output=True).returncode:
        pytest.skip(f"no open_clip venv at {PEER} (set ENTITYNET_OPEN_CLIP_PYTHON)")
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import CLIPModel

    from entitynet.training import model as scratch
    from entitynet.training.convert import convert_to_open_clip

    texts = ["Spotted  leopard!!", "Spotted leopard!!", "  a\tspotted\nleopard ", "It&#39;s Tom &amp; Jerry",
             "don\u2019t \u201cquote\u201d", "\ufb01ne lion\u00a0\u2003here", "a lion in the grass"]
    torch.manual_seed(0)
    tokenizer = scratch.train_tokenizer(texts * 10, vocab_size=300, context_length=16)
    scratch.save(tmp_path / "hf", scratch.scratch_model("tiny", tokenizer, 16), tokenizer, scratch.image_processor(64))
    convert_to_open_clip(tmp_path / "hf", tmp_path / "oc")
    Image.new("RGB", (80, 70), (120, 30, 200)).save(tmp_path / "probe.png")
    (tmp_path / "inputs.json").write_text(json.dumps({"texts": texts, "images": [str(tmp_path / "probe.png")]}))
    subprocess.run([str(PEER), str(REPO / "benchmarks" / "open_clip_peer.py"), "embed", f"local-dir:{tmp_path / 'oc'}",
                    str(tmp_path / "inputs.json"), str(tmp_path / "theirs.safetensors")], check=True, capture_output=True)
    theirs = load_file(str(tmp_path / "theirs.safetensors"))
    ours = tokenizer(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    assert ours["input_ids"].tolist() == theirs["ids"].tolist()
    model = CLIPModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        embeddings = torch.nn.functional.normalize(model.get_text_features(**ours).pooler_output, dim=-1)
    assert (embeddings - theirs["text"]).abs().max().item() <= 1e-4
