"""Zero-shot retrieval recall@K as CLIP-like papers and CLIP_benchmark report it: a query scores 1
when at least one of its positives is among the first K retrieved items, and the score is the
mean over queries.

Each prediction is the list of item indices retrieved for one query, best first (at least
max(ks) of them, or every item when there are fewer); each reference is the set of that query's
positives (for text retrieval every caption of the image; an image without captions has none
and scores 0, as in CLIP_benchmark). The caller names the direction:
``image_retrieval_recall@K`` has texts as queries and images as items, ``text_retrieval_recall@K``
the reverse.

Loaded offline with ``evaluate.load(<this folder>)``; one import per line (evaluate reads them).
"""

import datasets
import evaluate

_CITATION = ""
_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of lists of int, retrieved item indices per query, best first.
    references: list of lists of int, the positive items of each query.
    ks: list of int, the K of recall@K.
Returns:
    {"recall@K": float} for each K.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ZeroshotRetrieval(evaluate.Metric):
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

    def _compute(self, predictions, references, ks=(1, 5, 10)):
        if not predictions:
            raise ValueError("no queries to score")
        scores = {}
        for k in ks:
            found = sum(bool(set(positives).intersection(ranked[:k])) for ranked, positives in zip(predictions, references))
            scores[f"recall@{k}"] = found / len(predictions)
        return scores
