"""Same weights, same data: `entitynet eval` against LAION's CLIP_benchmark.

CLIP_benchmark evaluates open_clip models only, so the comparison goes through open_clip:

1. in the peer venv (open_clip + clip-benchmark, see ../shared/ENVIRONMENT.md), a randomly
   initialised open_clip CLIP (ViT-B/32-like by default; --tiny for a small one) is saved in open_clip's Hub
   layout, and CLIP_benchmark evaluates it (``--model local-dir:DIR``, fp32) on webdataset shards
   of the real camera-trap photos: zero-shot classification (8 classes) and retrieval (2 captions
   per image, recall@1/5/10);
2. here, the same weights become a ``transformers.CLIPModel`` through a small key map
   (``convert`` below; the project's open_clip converter will replace it), with a CLIPTokenizer
   built from open_clip's own BPE file and a CLIPImageProcessor with open_clip's preprocessing;
   `entitynet eval` evaluates it on the same shards;
3. the metrics are compared, and so are the embeddings (open_clip's encode_image/encode_text
   against ours on the same photos and prompts) and the token ids.

    python benchmarks/clip_benchmark_parity.py                  # peer venv at ../peer
    python benchmarks/clip_benchmark_parity.py --peer /path/to/venv --keep /tmp/parity

Exit status 0 when every metric is equal.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from eval_data import captions_of, class_names, label_of, ordered, webdataset  # noqa: E402

PHOTOS = REPO.parent / "shared" / "realdata" / "labelled_photos" / "cameratrapai"
CONFIGS = {
    # open_clip model_cfg: ViT-B/32 as open_clip builds it (GELU, 224 px), context 77
    "vit-b-32": {"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}},
    # small and fast; 224 px, so the crops of these photos have even margins (see the README)
    "tiny": {"embed_dim": 32, "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
             "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}},
}

# Runs in the peer venv: make and save the open_clip model, and dump what it computes itself.
PEER_SCRIPT = r'''
import json, sys
from pathlib import Path
import open_clip, torch
from open_clip.push_to_hf_hub import save_config_for_hf
from safetensors.torch import save_file
from PIL import Image

config, out, photos, prompts = json.loads(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
torch.manual_seed(int(sys.argv[5]))
model = open_clip.CLIP(**config).eval()
model.visual.image_mean, model.visual.image_std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
out.mkdir(parents=True, exist_ok=True)
save_config_for_hf(model, out / "open_clip_config.json", model_config=config)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + str(out))
model.eval()
tokenizer = open_clip.get_tokenizer("local-dir:" + str(out))
with torch.no_grad():
    images = torch.stack([preprocess(Image.open(p)) for p in photos])
    image = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    tokens = tokenizer(prompts)
    text = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
ids = [[int(t) for t in row if t != 0] for row in tokens]
torch.save({"image": image, "text": text, "pixels": images}, out / "peer_features.pt")
(out / "peer_tokens.json").write_text(json.dumps(ids))
print(repr(preprocess))
'''


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (the BPE's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def clip_tokenizer(bpe_file: Path, folder: Path, context_length: int):
    """CLIP's tokenizer as transformers knows it (vocab.json + merges.txt), from open_clip's BPE file."""
    from transformers import CLIPTokenizer

    merges = gzip.open(bpe_file).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    alphabet = list(bytes_to_unicode().values())
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: n for n, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=context_length)


def convert(state: dict[str, torch.Tensor], config: dict):
    """open_clip CLIP weights -> transformers CLIPModel (a key map; q/k/v split, projections transposed)."""
    from transformers import CLIPConfig, CLIPModel

    vision, text = config["vision_cfg"], config["text_cfg"]
    hf = CLIPModel(CLIPConfig(
        text_config={"vocab_size": text["vocab_size"], "hidden_size": text["width"], "num_hidden_layers": text["layers"],
                     "num_attention_heads": text["heads"], "intermediate_size": 4 * text["width"],
                     "max_position_embeddings": text["context_length"], "hidden_act": "gelu",
                     "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={"image_size": vision["image_size"], "patch_size": vision["patch_size"], "hidden_size": vision["width"],
                       "num_hidden_layers": vision["layers"], "num_attention_heads": vision["width"] // vision.get("head_width", 64),
                       "intermediate_size": 4 * vision["width"], "hidden_act": "gelu"},
        projection_dim=config["embed_dim"]))
    mapped = {"logit_scale": state["logit_scale"],
              "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
              "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
              "text_model.final_layer_norm.weight": state["ln_final.weight"],
              "text_model.final_layer_norm.bias": state["ln_final.bias"],
              "text_projection.weight": state["text_projection"].T,
              "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
              "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
              "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
              "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
              "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
              "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
              "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
              "visual_projection.weight": state["visual.proj"].T}
    for source, target, layers in (("transformer", "text_model", text["layers"]),
                                   ("visual.transformer", "vision_model", vision["layers"])):
        for i in range(layers):
            a, b = f"{source}.resblocks.{i}", f"{target}.encoder.layers.{i}"
            for part, weight in zip("qkv", state[f"{a}.attn.in_proj_weight"].chunk(3)):
                mapped[f"{b}.self_attn.{part}_proj.weight"] = weight
            for part, bias in zip("qkv", state[f"{a}.attn.in_proj_bias"].chunk(3)):
                mapped[f"{b}.self_attn.{part}_proj.bias"] = bias
            for ours, theirs in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                                 ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                for kind in ("weight", "bias"):
                    mapped[f"{b}.{ours}.{kind}"] = state[f"{a}.{theirs}.{kind}"]
    missing, unexpected = hf.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise SystemExit(f"key map incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return hf.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", default=str(REPO.parent / "peer"), help="venv with open_clip and clip-benchmark")
    parser.add_argument("--photos", default=str(PHOTOS))
    parser.add_argument("--model", choices=sorted(CONFIGS), default="vit-b-32")
    parser.add_argument("--seed", type=int, default=0, help="the random initialisation")
    parser.add_argument("--keep", help="work here instead of a temporary folder")
    parser.add_argument("--with-exif-photo", action="store_true",
                        help="include the photo stored rotated with an EXIF orientation tag (CLIP_benchmark ignores the tag)")
    args = parser.parse_args()
    peer = Path(args.peer) / "bin" / "python"
    if not peer.exists():
        print(f"peer venv not found at {args.peer} (see ../shared/ENVIRONMENT.md)", file=sys.stderr)
        return 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="parity-"))
    config = CONFIGS[args.model]
    photos = ordered([p for p in Path(args.photos).glob("*.jpg") if "truncated" not in p.name
                      and (args.with_exif_photo or "exif_orientation" not in p.name)])
    names = class_names(photos)
    templates = ("a camera trap photo of a {c}.", "a blurry photo of the {c}.")
    webdataset(photos, work / "wds_cam", templates=templates)
    webdataset(photos, work / "wds_cam_captions", retrieval=True)
    prompts = [t.replace("{c}", n) for n in names for t in templates] + [c for p in photos for c in captions_of(p)]

    # 1. open_clip model and CLIP_benchmark, in the peer venv
    oc = work / "open_clip_model"
    done = subprocess.run([str(peer), "-c", PEER_SCRIPT, json.dumps(config), str(oc), json.dumps([str(p) for p in photos]),
                           json.dumps(prompts), str(args.seed)], capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        return 1
    print("open_clip preprocessing:", " ".join(done.stdout.split()))
    theirs = {}
    for dataset, task in (("wds_cam", "zeroshot_classification"), ("wds_cam_captions", "zeroshot_retrieval")):
        out = work / f"clip_benchmark_{task}.json"
        command = [str(peer), "-m", "clip_benchmark.cli", "eval", "--dataset", f"wds/{dataset}", "--dataset_root",
                   str(work / dataset), "--model", f"local-dir:{oc}", "--pretrained", "none", "--task", task,
                   "--no_amp", "--batch_size", "64", "--num_workers", "0", "--recall_k", "1", "5", "10",
                   "--output", str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        theirs[task] = json.loads(out.read_text())["metrics"]

    # 2. the same weights as a CLIPModel, evaluated by entitynet eval
    from safetensors.torch import load_file
    from transformers import CLIPImageProcessor

    from entitynet.cli import main as entitynet

    bpe = next(Path(args.peer).glob("lib/python*/site-packages/open_clip/bpe_simple_vocab_16e6.txt.gz"))
    converted = work / "clip_model"
    model = convert(load_file(str(oc / "open_clip_model.safetensors")), config)
    tokenizer = clip_tokenizer(bpe, work / "bpe", config["text_cfg"]["context_length"])
    size = config["vision_cfg"]["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    model.save_pretrained(converted)
    tokenizer.save_pretrained(converted)
    processor.save_pretrained(converted)
    ours = {}
    for dataset, task in (("wds_cam", "zeroshot_classification"), ("wds_cam_captions", "zeroshot_retrieval")):
        out = work / f"entitynet_{task}.json"
        if entitynet(["eval", "--model", str(converted), "--dataset", str(work / dataset), "--task", task,
                      "--output", str(out), "--no-progress", "-q"]) != 0:
            return 1
        ours[task] = json.loads(out.read_text())["metrics"]

    # 3. compare: token ids, embeddings, metrics
    from entitynet.training.evaluation import load_model
    from entitynet.training.evaluation.features import embed_images, embed_texts
    from entitynet.training.evaluation.images import decode
    from entitynet.training.evaluation.inputs import DataSpec, open_input

    peer_features = torch.load(oc / "peer_features.pt", weights_only=True)
    peer_ids = json.loads((oc / "peer_tokens.json").read_text())
    our_ids = [tokenizer(p)["input_ids"] for p in prompts]
    clip = load_model(str(converted))
    image = embed_images(clip.model, clip.processor, open_input(DataSpec(str(work / "wds_cam"))).read(), progress=False)
    text = embed_texts(clip.model, clip.tokenizer, prompts)
    pixels = processor(images=[decode(p.read_bytes(), str(p)) for p in photos], return_tensors="pt")["pixel_values"]
    print(f"photos: {len(photos)} ({', '.join(sorted({label_of(p) for p in photos}))}), prompts: {len(prompts)}")
    print(f"token ids equal: {our_ids == peer_ids}")
    gaps = (pixels - peer_features["pixels"]).abs().flatten(1).max(dim=1).values
    print("pixels, max |ours - open_clip| per photo: "
          + ", ".join(f"{p.stem} {gap:.1e}" for p, gap in zip(photos, gaps.tolist()) if gap > 0) or "none differ")
    print(f"image embeddings, max |ours - open_clip|: {(image.embeddings - peer_features['image']).abs().max():.2e}")
    print(f"text embeddings, max |ours - open_clip|: {(text - peer_features['text']).abs().max():.2e}")
    print()
    print("| task | metric | CLIP_benchmark | entitynet eval | equal |")
    print("|---|---|---|---|---|")
    equal = True
    for task in theirs:
        for name, value in theirs[task].items():
            mine = ours[task].get(name)
            # CLIP_benchmark's recalls are float32 means, and it writes NaN where we write None
            same = (mine is None and value != value) or (mine is not None and abs(mine - value) < 1e-6)
            equal &= same
            print(f"| {task} | {name} | {value:.6f} | {'None' if mine is None else f'{mine:.6f}'} | {'yes' if same else 'NO'} |")
    print()
    print(f"model: open_clip {args.model}, random init (seed {args.seed}), fp32; work folder {work}")
    print("PARITY: every metric equal" if equal else "PARITY: metrics differ")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
