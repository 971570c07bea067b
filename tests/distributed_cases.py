"""Cases that need two processes, run by tests/test_training.py in a fresh interpreter under
accelerate's debug_launcher (two forked CPU processes, gloo). Exit status 0 means the case held.

    python tests/distributed_cases.py loss
    python tests/distributed_cases.py train DATASET OUTPUT
"""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator, debug_launcher

from entitynet.training import train as trainer
from entitynet.training.config import load_train_config
from entitynet.training.loss import clip_loss


class Single:
    num_processes, process_index = 1, 0


def loss_case() -> None:
    """Each process holds half the batch: its loss is the full batch's, and the gradient of its
    half is the full-batch gradient of those rows."""
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    torch.manual_seed(0)
    images, texts, scale = torch.randn(8, 16), torch.randn(8, 16), torch.tensor(2.0)
    rank = accelerator.process_index
    mine = slice(rank * 4, rank * 4 + 4)
    local = images[mine].clone().requires_grad_(True)
    loss = clip_loss(local, texts[mine], scale, accelerator)
    loss.backward()
    reference = images.clone().requires_grad_(True)
    full = clip_loss(reference, texts, scale, Single())
    full.backward()
    assert torch.allclose(loss, full, atol=1e-6), (loss, full)
    assert torch.allclose(local.grad, reference.grad[mine], atol=1e-6)


def train_case(dataset: str, output: str) -> None:
    trainer.train(load_train_config("tiny", [f"dataset={dataset}", f"output_dir={output}", "max_steps=3",
                                             "batch_size=4", "max_grad_norm=0", "checkpoint_every=3"]))


if __name__ == "__main__":
    case, args = sys.argv[1], sys.argv[2:]
    function = {"loss": loss_case, "train": train_case}[case]
    debug_launcher(lambda: function(*args), num_processes=2)
