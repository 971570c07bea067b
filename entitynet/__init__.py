"""EntityNet: knowledge graphs to image-text datasets for CLIP.

The library holds the dataset-making stages (``kg``, ...); the trainer lives in
``entitynet.training`` and is never imported from here.
"""

__version__ = "0.1.0"
