"""Zero-shot evaluation of CLIP models (``entitynet eval``; needs ``entitynet[train]``).

The pieces, each usable alone:

- ``inputs``: a dataset, detected (image folder, CLIP_benchmark webdataset, Hugging Face
  dataset, our built datasets), as a stream of examples; ``webdataset`` reads the tar layout.
- ``classes``: ``ClassSet``, the classes of a task (ids and names), ImageNet's living/other split.
- ``templates``: prompt template sets (openai, simple, none, a file, the dataset's own).
- ``features``: batch-by-batch image and text embeddings under Accelerate.
- ``scoring``: classifier weights, top-k rankings and the ``evaluate`` metric modules in ``metrics/``.
- ``tasks`` and ``suite``: one task, and many (shipped suites in ``configs/eval``), sharing image features.
- ``report``: the summary table and the model card's results.
- ``api.evaluate_built_dataset``: what the trainer calls on rows of a built dataset.
"""

from entitynet.training.evaluation.api import entity_classes, evaluate_built_dataset
from entitynet.training.evaluation.classes import ClassSet
from entitynet.training.evaluation.models import Clip, load_model

__all__ = ["ClassSet", "Clip", "entity_classes", "evaluate_built_dataset", "load_model"]
