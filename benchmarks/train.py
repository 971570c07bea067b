"""The trainer's throughput against a plain hand-written loop on the same data and model.

Both run in fresh processes, one after the other, then again (two rounds; each side's best
counts), on the dataset ``entitynet demo`` makes (made first if missing):

- ours: ``python -m entitynet.training.train --config tiny`` with the given steps and batch,
  checkpointing only at the end, evaluation included in its wall time but not in its rate;
- the peer: what a user would write with transformers alone: load_dataset, CLIPImageProcessor
  and the same tokenizer in a collate function (first alt text of each image), CLIPModel with
  ``return_loss=True``, AdamW, no Accelerate, no checkpoint.

Rate = images per second over the training steps, from the first step's end (start-up and the
first step's warm-up are left out of both). Target: ours >= 0.9x the peer.

    python benchmarks/train.py                      # 300 steps of 32, about 3 minutes
    python benchmarks/train.py --steps 60 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

OURS = r"""
import json, logging, sys, time
from entitynet.training import train as trainer
from entitynet.training.config import load_train_config

dataset, output, steps, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
marks = []

class Clock(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("step ") and "/" in record.getMessage().split()[1]:
            marks.append((int(record.getMessage().split()[1].split("/")[0]), time.perf_counter()))

logging.getLogger("entitynet.training.train").addHandler(Clock())
logging.getLogger("entitynet.training.train").setLevel(logging.INFO)
config = load_train_config("tiny", [f"dataset={dataset}", f"output_dir={output}", f"max_steps={steps}",
                                    f"batch_size={batch}", "log_every=1", f"checkpoint_every={steps}", "num_workers=0"])
trainer.train(config)
(first_step, first), (last_step, last) = marks[0], marks[-1]
print(json.dumps({"images_per_s": (last_step - first_step) * batch / (last - first)}))
"""

PEER = r"""
import json, sys, time
import datasets, torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

dataset, tokenizer_dir, steps, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
rows = datasets.load_dataset(dataset, "livingthings", split="train")
tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})

def collate(batch_rows):
    texts = [row["alt_texts"][0] if row["alt_texts"] else row["queries"][0]["text"] for row in batch_rows]
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    pixels = processor(images=[row["image"].convert("RGB") for row in batch_rows], return_tensors="pt")["pixel_values"]
    return {"pixel_values": pixels, "input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

config = CLIPConfig(
    text_config={"vocab_size": len(tokenizer), "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 256, "max_position_embeddings": 32, "bos_token_id": tokenizer.bos_token_id,
                 "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
    vision_config={"image_size": 64, "patch_size": 16, "hidden_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "intermediate_size": 256}, projection_dim=64)
model = CLIPModel(config)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
loader = torch.utils.data.DataLoader(rows, batch_size=batch, shuffle=True, drop_last=True, collate_fn=collate)
step, marks = 0, []
while step < steps:
    for inputs in loader:
        loss = model(**inputs, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        marks.append(time.perf_counter())
        if step == steps:
            break
print(json.dumps({"images_per_s": (steps - 1) * batch / (marks[-1] - marks[0])}))
"""


def run(code: str, *args: str) -> float:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--demo", type=Path, default=Path(tempfile.gettempdir()) / "entitynet-bench-demo",
                        help="run folder of `entitynet demo` (made if missing)")
    args = parser.parse_args()
    if not (args.demo / "dataset" / "README.md").exists():
        subprocess.run([sys.executable, "-m", "entitynet", "demo", "--out", str(args.demo), "--no-train", "-q"], check=True)
    dataset = str(args.demo / "dataset")
    ours, peer = [], []
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(2):
            output = Path(work) / f"ours-{round_}"
            ours.append(run(OURS, dataset, str(output), str(args.steps), str(args.batch)))
            peer.append(run(PEER, dataset, str(output / "tokenizer"), str(args.steps), str(args.batch)))
            print(json.dumps({"round": round_, "ours_images_per_s": round(ours[-1], 1), "peer_images_per_s": round(peer[-1], 1)}), flush=True)
    print(f"\nsteps {args.steps}, batch {args.batch}: ours {max(ours):.1f} images/s, plain loop {max(peer):.1f} images/s, "
          f"ratio {max(ours) / max(peer):.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
