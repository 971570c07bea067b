"""``entitynet wise-ft``: its arguments (imported by ``cli.py`` without torch, so ``--help`` works
without the train extra) and what it does (``training/wise_ft.py``, ``training/wise_ft_scores.py``).

Exit status: 0 done, 1 the models cannot be interpolated or a suite task failed, 2 bad usage
(alphas, OUT, suite) or the train extra is missing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from entitynet.extras import missing_extra

logger = logging.getLogger(__name__)


def add_parser(commands: Any, add_verbosity: Callable[..., None]) -> None:
    parser = commands.add_parser(
        "wise-ft",
        help="Interpolate a zero-shot CLIPModel with its finetune (WiSE-FT), one model per alpha (needs entitynet[train]).",
        description="WiSE-FT: write (1 - alpha) * ZERO_SHOT + alpha * FINETUNED, over every floating-point weight, as "
        "one CLIPModel folder per alpha (OUT/alpha-0.5, ... with the tokenizer and image processor: "
        "CLIPModel.from_pretrained and pipeline('zero-shot-image-classification') load each). Models whose weights' "
        "names or shapes, tokenizers or image inputs differ are refused. With --suite each folder is evaluated and "
        "OUT/scores.csv, scores.json and scores.png (with matplotlib) show the scores across alphas.",
    )
    parser.add_argument("--zero-shot", required=True, metavar="A", help="the model before finetuning (folder or Hub id)")
    parser.add_argument("--finetuned", required=True, metavar="B", help="the finetuned model (folder or Hub id); "
                        "its tokenizer and image processor are copied into each folder")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1", metavar="LIST",
                        help="comma-separated weights of B in [0, 1] (default 0,0.25,0.5,0.75,1)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write (missing or empty; "
                        "an earlier wise-ft output is replaced with --force)")
    parser.add_argument("--force", action="store_true", help="replace OUT when it holds an earlier wise-ft output "
                        "(and nothing else)")
    parser.add_argument("--suite", metavar="NAME", help="evaluate every alpha on this suite (as entitynet eval --suite)")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=DATASET",
                        help="a suite data key's dataset, or KEY.FIELD=VALUE (as entitynet eval; repeatable)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per batch when evaluating")
    parser.add_argument("--cpu", action="store_true", help="evaluate on the CPU even when a GPU is there")
    add_verbosity(parser, default=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        from entitynet.training import wise_ft
    except ImportError as missing:
        return missing_extra("wise-ft", missing)
    from entitynet.training.evaluation.suite import SuiteError, load_suite

    try:
        alphas = wise_ft.parse_alphas(args.alphas)
        if args.batch_size < 1:
            raise wise_ft.WiseFTError(f"--batch-size {args.batch_size}: must be at least 1")
        if args.suite:
            load_suite(args.suite, args.data)  # a bad suite fails before any model is written
        else:
            if args.data:
                raise wise_ft.WiseFTError("--data sets a suite's data: give --suite too")
        wise_ft.refuse_out(Path(args.out), args.force, (args.zero_shot, args.finetuned))
    except (wise_ft.WiseFTError, SuiteError) as error:
        print(f"entitynet wise-ft: error: {error}", file=sys.stderr)
        return 2
    try:
        ensembles = wise_ft.write_ensembles(args.zero_shot, args.finetuned, alphas, args.out, args.force)
    except wise_ft.WiseFTError as error:
        print(f"entitynet wise-ft: error: {error}", file=sys.stderr)
        return 1
    for ensemble in ensembles:
        print(f"alpha {ensemble.alpha:g}: {ensemble.folder}")
    if not args.suite:
        return 0
    from entitynet.training import wise_ft_scores

    scores, failed = wise_ft_scores.evaluate(ensembles, args.suite, args.data, Path(args.out), args.batch_size, args.cpu)
    table = wise_ft_scores.table(scores)
    written = wise_ft_scores.write(table, Path(args.out))
    print(wise_ft_scores.csv_text(table), end="")
    print(f"scores: {', '.join(str(path) for path in written)}"
          + ("" if any(p.suffix == ".png" for p in written) else " (no figure: matplotlib is not installed)"))
    return 1 if failed else 0
