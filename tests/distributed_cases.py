"""Cases that need two processes, run by tests/test_training.py in a fresh interpreter under
accelerate's debug_launcher (two forked CPU processes, gloo). Exit status 0 means the case held.

    python tests/distributed_cases.py loss
    python tests/distributed_cases.py train DATASET OUTPUT [KEY=VALUE ...]
    python tests/distributed_cases.py stopped STEP DATASET OUTPUT [KEY=VALUE ...]
    python tests/distributed_cases.py mixed_batches DATASET OUTPUT [KEY=VALUE ...]
"""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator, debug_launcher

from entitynet.training import train as trainer
from entitynet.training.config import load_train_config
from entitynet.training.loss import ClipLoss


def loss_case() -> None:
    """Each process holds half the batch and takes the loss of its own rows against every row:
    the mean of the two losses is the full batch's, and the data-parallel mean of the gradients
    (features and temperature alike) is the full batch's gradient; with the gathered features'
    gradients summed by reduce_scatter (used, not fallen back from, where the backend has it) and
    by all_reduce alike."""
    from entitynet.training import loss as clip_loss

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    torch.manual_seed(0)
    images, texts = torch.randn(8, 16), torch.randn(8, 16)
    rank = accelerator.process_index
    mine = slice(rank * 4, rank * 4 + 4)
    full_images, full_texts = images.clone().requires_grad_(True), texts.clone().requires_grad_(True)
    full_scale = torch.tensor(2.0, requires_grad=True)
    full = ClipLoss()(full_images, full_texts, full_scale)
    full.backward()
    for reduce_scatter in (True, False):
        local_images, local_texts = images[mine].clone().requires_grad_(True), texts[mine].clone().requires_grad_(True)
        scale = torch.tensor(2.0, requires_grad=True)
        loss = ClipLoss(rank, 2, reduce_scatter=reduce_scatter)(local_images, local_texts, scale)
        loss.backward()
        mean_loss = accelerator.reduce(loss.detach(), reduction="mean")
        assert torch.allclose(mean_loss, full, atol=1e-6), (reduce_scatter, mean_loss, full)
        # what DDP does to parameter gradients: the mean over processes
        assert torch.allclose(local_images.grad / 2, full_images.grad[mine], atol=1e-6), reduce_scatter
        assert torch.allclose(local_texts.grad / 2, full_texts.grad[mine], atol=1e-6), reduce_scatter
        mean_scale_grad = accelerator.reduce(scale.grad.detach(), reduction="mean")
        assert torch.allclose(mean_scale_grad, full_scale.grad, atol=1e-6), (mean_scale_grad, full_scale.grad)
    # the two ways of summing give each process the same rows of the same sum
    grad = torch.arange(24.0).reshape(8, 3) * (rank + 1)
    scattered = clip_loss.sum_own_rows(grad.clone(), rank, 4, reduce_scatter=True)
    reduced = clip_loss.sum_own_rows(grad.clone(), rank, 4, reduce_scatter=False)
    assert torch.equal(scattered, reduced) and torch.equal(scattered, 3 * torch.arange(24.0).reshape(8, 3)[mine])
    if torch.__version__ >= "2.13":  # TorchVersion compares as a version; gloo has reduce_scatter in 2.13 (checked)
        assert not clip_loss._NO_REDUCE_SCATTER, "gloo's reduce_scatter went unused"
    print(f"rank {rank}: reduce_scatter unavailable on {sorted(clip_loss._NO_REDUCE_SCATTER) or 'no backend'}")


def train_case(dataset: str, output: str, *assignments: str) -> None:
    trainer.train(load_train_config("tiny", [f"dataset={dataset}", f"output_dir={output}", *assignments]))


class Stopped(Exception):
    """Raised on every process right after the checkpoint of the chosen step, as a kill would stop it."""


def stopped_case(step: str, dataset: str, output: str, *assignments: str) -> None:
    """Train until the checkpoint of ``step`` is complete on every process, then stop there."""
    original = trainer.save_checkpoint

    def stop_after(accelerator, folder, state, keep):  # type: ignore[no-untyped-def]
        original(accelerator, folder, state, keep)
        if state["step"] == int(step):
            raise Stopped

    trainer.save_checkpoint = stop_after
    try:
        train_case(dataset, output, *assignments)
    except Stopped:
        return
    raise AssertionError(f"the run ended without a checkpoint at step {step}")


def mixed_batches_case(dataset: str, output: str, *assignments: str) -> None:
    """The image ids of one epoch of each process's batches, as the trainer sets up its data for this
    rank (a mix: ``training.mix``), gathered into OUTPUT/batches.json [process][batch][row]."""
    import json
    from pathlib import Path

    from accelerate.utils import gather_object
    from torch.utils.data import DataLoader

    config = load_train_config("tiny", [f"dataset={dataset}", f"output_dir={output}", *assignments])
    training, _, _ = trainer.setup(config)
    loader = DataLoader(training.data.rows, batch_size=config.batch_size, num_workers=config.num_workers,
                        drop_last=True, collate_fn=lambda rows: [row["image_id"] for row in rows])
    batches = gather_object([list(loader)])
    if training.accelerator.is_main_process:
        Path(output, "batches.json").write_text(json.dumps(batches))
    training.accelerator.wait_for_everyone()


if __name__ == "__main__":
    case, args = sys.argv[1], sys.argv[2:]
    function = {"loss": loss_case, "train": train_case, "stopped": stopped_case, "mixed_batches": mixed_batches_case}[case]
    debug_launcher(lambda: function(*args), num_processes=2)
