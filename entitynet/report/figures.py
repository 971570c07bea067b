"""The report's figures, drawn with matplotlib (the ``report`` extra) into PNG files beside the page.

Each function returns the file's name relative to the report folder, or None when there is
nothing to draw. ``available()`` says whether matplotlib is installed; without it the page
shows the same numbers as tables and says how to get the figures.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

FIGURES = "figures"
CURVES = (("loss", "loss"), ("lr", "learning rate"), ("grad_norm", "gradient norm"),
          ("images_per_s", "images / s"), ("data_wait_share", "data-wait share"))


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    import logging

    # its one-time "building the font cache" and font fallbacks are warnings about the machine,
    # not the run: they would be the only warning of a clean `entitynet demo`
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever the environment says
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, out: Path, name: str) -> str:
    relative = f"{FIGURES}/{name}"
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    figure.savefig(out / relative, dpi=96, bbox_inches="tight")
    _pyplot().close(figure)
    return relative


def images_per_entity(counts: list[int], buckets: dict[str, int], out: Path) -> str | None:
    """The head/tail buckets and the distribution of images per entity (entities with images, log scale)."""
    if not counts:
        return None
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.bar(list(buckets), list(buckets.values()), color="#4c72b0")
    left.set_xlabel("images per entity")
    left.set_ylabel("entities")
    left.set_title("head and tail")
    for x, value in enumerate(buckets.values()):
        left.annotate(f"{value:,}", (x, value), ha="center", va="bottom", fontsize=8)
    shown = [n for n in counts if n > 0]
    if shown and max(shown) <= 50:  # one bar per count
        from matplotlib.ticker import MaxNLocator

        right.hist(shown, bins=[n - 0.5 for n in range(1, max(shown) + 2)], color="#55a868")
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
    elif shown:  # a long tail: bins growing by half, on a log axis with plain numbers
        from matplotlib.ticker import ScalarFormatter

        edges = sorted({int(1.5 ** k) for k in range(0, 60) if 1.5 ** k <= max(shown)} | {max(shown) + 1})
        right.hist(shown, bins=edges, color="#55a868")
        right.set_xscale("log")
        right.xaxis.set_major_formatter(ScalarFormatter())
    right.set_xlabel("images per entity (entities with any)")
    right.set_ylabel("entities")
    right.set_title("distribution")
    figure.tight_layout()
    return _save(figure, out, "images_per_entity.png")


def training_curves(records: list[dict[str, Any]], out: Path) -> str | None:
    """Loss, learning rate, gradient norm, images/s and data-wait share against the step."""
    drawn = [(key, title) for key, title in CURVES if any(key in record for record in records)]
    if not drawn:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(drawn), figsize=(3.0 * len(drawn), 2.6), squeeze=False)
    for axis, (key, title) in zip(axes[0], drawn):
        points = [(record["step"], record[key]) for record in records if record.get(key) is not None]
        axis.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, color="#4c72b0")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    return _save(figure, out, "training.png")


def evaluation_curves(records: list[dict[str, Any]], keys: list[str], out: Path) -> str | None:
    """The periodic (and final) evaluation scores against the step."""
    wanted = [key for key in keys if key.endswith(("acc1", "acc5", "mean_per_class_recall"))
              and sum(1 for record in records if record.get(key) is not None) > 1]
    if not wanted:  # the final evaluation alone is no curve: the Evaluation section has it
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    for key in wanted:
        points = [(record["step"], record[key]) for record in records if record.get(key) is not None]
        axis.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, label=key)
    axis.set_xlabel("step")
    axis.set_ylabel("score")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return _save(figure, out, "evaluation.png")
