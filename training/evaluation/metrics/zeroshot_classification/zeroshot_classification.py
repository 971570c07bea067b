"""Zero-shot classification metrics under CLIP_benchmark's names: ``acc1``, ``acc5``,
``mean_per_class_recall``.

Each prediction is the list of class indices ranked best first (at least the top 5, or every
class when there are fewer); each reference is the set of the image's own classes (one for the
usual single-label benchmark; an EntityNet image may show several entities). An image counts as
correct at k when one of its classes is among the first k. ``mean_per_class_recall`` averages,
over the classes that have images, the share of their images classified correctly at 1: for
single-label data this is scikit-learn's ``balanced_accuracy_score``, which CLIP_benchmark reports.
With fewer than 5 classes ``acc5`` is None (CLIP_benchmark writes NaN).

Loaded offline with ``evaluate.load(<this folder>)``; one import per line (evaluate reads them).
"""

from collections import defaultdict

import datasets
import evaluate

_CITATION = ""
_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of lists of int, class indices ranked best first.
    references: list of lists of int, the classes of each image.
    num_classes: int, the number of classes the predictions were ranked among.
Returns:
    acc1, acc5 (None with fewer than 5 classes), mean_per_class_recall.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ZeroshotClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("int64")),
                "references": datasets.Sequence(datasets.Value("int64")),
            }),
        )

    def _compute(self, predictions, references, num_classes):
        if not predictions:
            raise ValueError("no images to score")
        hits = {k: 0 for k in (1, 5)}
        per_class = defaultdict(lambda: [0, 0])  # class -> [correct at 1, images]
        for ranked, own in zip(predictions, references):
            own = set(own)
            top1 = ranked[0] in own
            hits[1] += top1
            hits[5] += bool(own.intersection(ranked[:5]))
            for label in own:
                per_class[label][0] += top1
                per_class[label][1] += 1
        n = len(predictions)
        recalls = [correct / total for correct, total in per_class.values()]
        return {
            "acc1": hits[1] / n,
            "acc5": hits[5] / n if num_classes >= 5 else None,
            "mean_per_class_recall": sum(recalls) / len(recalls),
        }
