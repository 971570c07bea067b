"""The ``entitynet`` command: one subcommand per stage, each a thin layer over its module.

``main(argv)`` returns the exit status (0 done, 1 the stage failed, 2 bad usage or configuration),
so tests call it directly. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, get_type_hints

from entitynet import __version__, layout, pipeline, wise_ft_command
from entitynet.config import DOMAINS, Config, load_config, preset_names
from entitynet.extras import missing_extra
from entitynet.rundir import MissingInput, RunDir, StageError, StageResult, rank_and_world
from entitynet.typed_config import ConfigError, add_flags, describe_text, flag_values

logger = logging.getLogger("entitynet.cli")

# what `entitynet eval` needs beyond the library (the train extra)
TRAIN_EXTRA = ("torch", "transformers", "accelerate", "evaluate")
FAILURES = (StageError, OSError)  # one line on stderr, exit 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose - args.quiet)
    quiet = args.command in ("run", "demo") and args.verbose <= 0
    try:
        with quiet_libraries(demo=args.command == "demo") if quiet else contextlib.nullcontext():
            return args.handler(args)
    except ConfigError as error:
        print(f"entitynet: configuration error: {error}", file=sys.stderr)
        return 2
    except FAILURES as error:
        print(f"entitynet {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"entitynet {args.command}: interrupted; {resume_hint(args)}", file=sys.stderr)
        return 130
    finally:
        _end_process_group()


def resume_hint(args: argparse.Namespace) -> str:
    """How to go on after an interrupt: the same command, less --force (it would discard what was
    done so far, the trainer's checkpoints among it)."""
    if getattr(args, "force", False):
        return "rerun the same command without --force to resume (with --force it would start over)"
    return "rerun the same command to resume"


def _end_process_group() -> None:
    """Under `accelerate launch` the stages share one process group (the trainer's and the
    pipeline's barriers); it ends with the command, not with the trainer."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entitynet",
        description="Knowledge graphs to image-text datasets for CLIP. Each command is one stage of the "
        "flow and reads and writes a run directory (--run).",
        epilog="Run 'entitynet COMMAND --help' for a stage's options and configuration keys. Training CLIP on "
        "a built dataset: 'accelerate launch -m entitynet.training.train --help' (needs entitynet[train]).",
    )
    parser.add_argument("--version", action="version", version=f"entitynet {__version__}")
    _add_verbosity(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    doors = {door.replaces[-1]: door for door in pipeline.DOORS}  # a door's command follows the last stage it replaces
    for entry in pipeline.STAGES:
        if entry.command is not None:
            _add_stage(commands, entry)
        if entry.name in doors:
            _add_import(commands)
    _add_export(commands)
    _add_push(commands)
    _add_eval(commands)
    _add_run(commands)
    _add_demo(commands)
    _add_convert(commands)
    wise_ft_command.add_parser(commands, _add_verbosity)
    _add_report(commands)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, default: Any = 0) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="count", default=default, help="less log output: warnings and errors only")


def _stage_parser(commands: Any, name: str, summary: str, section: type, prefix: str) -> argparse.ArgumentParser:
    """A stage subcommand with the options every stage shares and its config keys in the epilog."""
    keys = describe_text(section, prefix)
    parser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"configuration keys (YAML under '{prefix.rstrip('.')}:', or --set KEY=VALUE):\n{keys}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", required=True, metavar="RUN", help="run directory that holds every stage's artifacts")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML configuration (or a shipped one: {', '.join(preset_names())}); only the keys you set "
        "change the domain's preset",
    )
    parser.add_argument("--domain", choices=DOMAINS, help="which dataset: its preset is the base configuration (default livingthings)")
    parser.add_argument(
        "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
        help="override one configuration key, e.g. --set kg.sparql.page_size=500 (repeatable)",
    )
    parser.add_argument("--force", action="store_true", help="redo the stage even if it finished, discarding its cache")
    # SUPPRESS: a subcommand's -v adds to the main parser's instead of resetting it.
    _add_verbosity(parser, default=argparse.SUPPRESS)
    return parser


def _add_stage(commands: Any, entry: pipeline.Stage) -> None:
    """`entitynet <stage>`: the options every stage shares, then the flags its configuration
    section declares (``option(..., flag=...)``), then the command's own (COMMAND_OPTIONS)."""
    section = _section(entry.name)
    parser = _stage_parser(commands, entry.name, entry.command or "", section, f"{entry.name}.")
    add_flags(parser, section, f"{entry.name}.")
    for flag, settings in COMMAND_OPTIONS.get(entry.name, {}).items():
        parser.add_argument(flag, **settings)
    parser.set_defaults(handler=_run_stage)


# Options of a stage's command that are not configuration: passed to the stage as ``context.options``.
COMMAND_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "download": {"--retry-failures": {"action": "store_true", "help": "refetch only URLs that failed for transient reasons"}},
}


def _section(name: str) -> type:
    """The configuration section of a stage: the field of ``Config`` named like it."""
    return get_type_hints(Config)[name]


def _add_import(commands: Any) -> None:
    parser = commands.add_parser(
        "import", help="Import a released dataset or a URL list in place of kg..search: entities, queries, RUN/candidates.",
        description="Write the run's entities, natural types, queries and candidates from outside, in place of the kg, "
        "enrich, queries and search stages, so 'entitynet download' and 'entitynet build' continue: from the authors' "
        "released EntityNet (a Hub id such as lmb-freiburg/entitynet, or a local clone with images_metadata/) or from a "
        "plain URL list (.parquet, .csv, .tsv, .jsonl or .txt, or a glob of them).",
    )
    parser.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                        help="a Hub dataset id, a release folder, or a URL list file (or glob)")
    parser.add_argument("--run", required=True, metavar="RUN", help="a new run directory")
    parser.add_argument("--splits", type=_split_list, metavar="LIST",
                        help="a release's splits to import, comma-separated among train, val, test, minitrain (default: all it has)")
    parser.add_argument("--revision", metavar="REV", help="the Hub revision (branch, tag or commit) of a Hub id")
    parser.add_argument("--url-column", metavar="NAME", help="a URL list's URL column (default: url, URL or image_url)")
    parser.add_argument("--caption-column", metavar="NAME",
                        help="a URL list's caption column (default: text, caption, TEXT, alt or alt_text if present)")
    parser.add_argument("--rows-per-part", type=int, default=100_000, metavar="N", help="source rows per candidates part")
    parser.add_argument("--force", action="store_true", help="redo the import even if it finished")
    _add_verbosity(parser, default=argparse.SUPPRESS)
    parser.set_defaults(handler=_run_import)


def _add_export(commands: Any) -> None:
    parser = commands.add_parser(
        "export", help="Export RUN/dataset as webdataset tar shards (jpg, txt, json).",
        description="Export RUN/dataset as webdataset tar shards (jpg, txt, json) for open_clip and webdataset users.",
    )
    parser.add_argument("--run", required=True, metavar="RUN", help="run directory holding dataset/")
    parser.add_argument("--format", choices=["webdataset"], default="webdataset", help="export format")
    parser.add_argument("--out", metavar="DIR", help="where the shards go (default RUN/export/webdataset)")
    parser.add_argument("--samples-per-shard", type=_positive_int, default=1000, metavar="N",
                        help="rows per tar shard (at least 1)")
    _add_verbosity(parser, default=argparse.SUPPRESS)
    parser.set_defaults(handler=_run_export)


def _add_push(commands: Any) -> None:
    parser = commands.add_parser(
        "push", help="Upload a built dataset or a trained model to the Hugging Face Hub.",
        description="Upload a built dataset folder (RUN/dataset) or a trained model folder (OUTPUT/model) to the "
        "Hugging Face Hub (resumable large-folder upload). "
        "The token comes from HF_TOKEN or the saved login and is never printed.",
    )
    parser.add_argument("what", choices=["dataset", "model"], help="what to push")
    parser.add_argument("folder", help="the folder, e.g. RUN/dataset or OUTPUT/model")
    parser.add_argument("--repo", required=True, metavar="ORG/NAME", help="the Hub repository")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; no network")
    _add_verbosity(parser, default=argparse.SUPPRESS)
    parser.set_defaults(handler=_run_push)


def _add_eval(commands: Any) -> None:
    parser = commands.add_parser(
        "eval", help="Zero-shot classification and retrieval of a CLIP model on a dataset or a named suite "
        "(needs entitynet[train]).",
        description="Evaluate a CLIP model (our trainer's OUTPUT/model, any transformers CLIPModel id or folder)\n"
        "zero-shot: classification (acc1, acc5, mean_per_class_recall) and image-text retrieval\n"
        "(image_retrieval_recall@K, text_retrieval_recall@K), with CLIP_benchmark's metric names.\n\n"
        "DATASET is read by its own files, never by stray ones: a Hugging Face dataset (a README.md\n"
        "declaring configs, .parquet/.arrow files; a built EntityNet dataset gives its entities as classes and\n"
        "its alt texts for retrieval), CLIP_benchmark's webdataset layout (SPLIT/nshards.txt; or a Hub id such\n"
        "as clip-benchmark/wds_imagenet1k), or an image folder (one subfolder of images per class, named by\n"
        "the folder with '_' as a space). A folder that fits two readings, or none, is refused: --format\n"
        "chooses. The reading and the class names are printed and recorded in the result JSON.\n"
        "Writes one JSON per task and a summary table (.md, .csv).",
        epilog="examples:\n"
        "  entitynet eval --model runs/living/clip/model --dataset runs/living/dataset --output eval/test.json\n"
        "  entitynet eval --model openai/clip-vit-base-patch32 --dataset clip-benchmark/wds_imagenet1k --templates openai\n"
        "  entitynet eval --model runs/living/clip/model --suite paper --output eval/paper --skip-existing\n"
        "  entitynet eval --model M --dataset photos/ --templates my_templates.txt --update-card M",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="MODEL", help="a CLIPModel folder (save_pretrained) or Hub id")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", metavar="DATASET", help="a folder or a Hub dataset id (see above)")
    what.add_argument("--suite", metavar="NAME", help="a shipped suite (paper, ...) or a suite YAML file")
    parser.add_argument("--output", metavar="PATH", help="results folder, or OUT.json for one dataset "
                        "(default eval-results/, eval-results/SUITE/ for a suite)")
    data = parser.add_argument_group("the dataset (with --dataset)")
    data.add_argument("--split", help="split to evaluate (default test, or the only split)")
    data.add_argument("--config", metavar="NAME", help="dataset configuration (e.g. livingthings)")
    data.add_argument("--dataset-id", metavar="ORG/NAME", help="the Hub id --update-card files the results under, "
                      "for a local folder (default: the id it was loaded by, or the one its folder records: "
                      "pushed there, or named by its build)")
    data.add_argument("--format", default="auto", choices=["auto", "imagefolder", "hf", "wds", "entitynet"],
                      help="how to read DATASET, instead of by its files (default auto)")
    data.add_argument("--image-column", metavar="COLUMN", help="image column (default: the first Image column)")
    data.add_argument("--label-column", metavar="COLUMN", help="label column (default: the first ClassLabel, or 'label')")
    data.add_argument("--caption-column", metavar="COLUMN", help="captions for retrieval (a string or a list of strings)")
    data.add_argument("--class-names", metavar="FILE", help="class names: one per line in label order, or JSON "
                      "(a list whose items may be lists of synonyms, or {label: name(s)})")
    data.add_argument("--name-format", metavar="FORMAT", help="class names from row fields, e.g. '{genus} {species}' "
                      "(string labels; for built datasets entity fields, '{name}, a type of {natural_type}')")
    data.add_argument("--max-images", type=_positive, metavar="N", help="only the first N images (default: all)")
    task = parser.add_argument_group("the task")
    task.add_argument("--task", default="auto", choices=["auto", "zeroshot_classification", "zeroshot_retrieval"],
                      help="auto: classification when images have classes, retrieval when they have captions")
    task.add_argument("--templates", metavar="SET", help="openai (80 ImageNet prompts), simple, none, or a file with "
                      "one template per line using {c} (default: the dataset's own, else simple)")
    task.add_argument("--classes", metavar="SUBSET", help="only these classes: imagenet1k-living, imagenet1k-other, "
                      "or a file with one class id per line")
    task.add_argument("--name", help="the task's name in files and the table (default from the dataset)")
    suite = parser.add_argument_group("suites (with --suite)")
    suite.add_argument("--data", action="append", default=[], metavar="KEY=DATASET",
                       help="point a suite's data key elsewhere, or set a field: KEY.FIELD=VALUE (repeatable)")
    suite.add_argument("--tasks", metavar="NAMES", help="only these tasks of the suite (comma-separated)")
    run = parser.add_argument_group("running")
    run.add_argument("--batch-size", type=_positive, default=64, metavar="N", help="images per batch (default 64)")
    run.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"], help="mixed precision (Accelerate)")
    run.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is there")
    run.add_argument("--workers", type=_not_negative, metavar="N", help="threads decoding images ahead of the model "
                     "(default: none on the CPU, whose cores the model uses; on a GPU the CPU count, at most 8)")
    run.add_argument("--skip-existing", action="store_true", help="keep tasks whose result JSON exists")
    run.add_argument("--skip-unreadable", action="store_true", help="leave out images that cannot be decoded, "
                     "counting them (skipped_images in the result) and naming them in the log; by default the "
                     "first one fails its task")
    run.add_argument("--update-card", metavar="MODEL_DIR", help="write the results into this folder's model card (model-index)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_verbosity(parser, default=argparse.SUPPRESS)
    parser.set_defaults(handler=_run_eval)


def _add_demo(commands: Any) -> None:
    parser = commands.add_parser(
        "demo", help="The whole flow offline on the bundled sample, with synthetic images, then a tiny CLIP and its "
        "evaluation; about a minute and a half on a CPU.",
        description="Run every stage offline: the bundled sample of Wikidata (and WordNet if installed), "
        "natural types, attributes, queries, a demo pool of SYNTHETIC images served on 127.0.0.1, the real "
        "downloader, the dataset (both configs) and its card, then a tiny CLIP trained on it and evaluated on "
        "entities it saw and entities it never saw.",
    )
    parser.add_argument("--out", default="entitynet-demo", metavar="DIR", help="run directory (default ./entitynet-demo)")
    parser.add_argument("--size", choices=["small", "full"], default="full", help="small: fewer entities, Wikidata only (for tests)")
    parser.add_argument("--force", action="store_true", help="redo every stage")
    parser.add_argument("--no-train", dest="train", action="store_false",
                        help="stop after the dataset (by default a tiny CLIP is trained on it when entitynet[train] is installed)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the training seed (another one trains and evaluates again on the same dataset)")
    _add_verbosity(parser, default=argparse.SUPPRESS)
    parser.set_defaults(handler=_run_demo)


def _add_convert(commands: Any) -> None:
    parser = commands.add_parser(
        "convert", help="Convert CLIP models between open_clip and transformers' CLIPModel (needs entitynet[train]).",
        description="Convert CLIP models between open_clip's format (the paper's released models) and transformers' "
        "CLIPModel. Needs the train extra: pip install 'entitynet[train]'.",
    )
    directions = parser.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    source = directions.add_parser(
        "open-clip", help="an open_clip model -> a CLIPModel folder (weights, config, tokenizer, image processor, card)",
        description="Convert an open_clip model into a folder that CLIPModel.from_pretrained, CLIPProcessor and "
        "pipeline('zero-shot-image-classification') load. The result is checked against open_clip's arithmetic on "
        "the source weights before anything is written.",
    )
    source.add_argument("source", metavar="SOURCE", help="hf-hub:ORG/NAME or ORG/NAME (downloaded), a folder with "
                        "open_clip_config.json and open_clip_model.safetensors (or open_clip_pytorch_model.bin), or a "
                        "training checkpoint such as epoch_32.pt (with --model-name)")
    source.add_argument("out", metavar="OUT", help="the folder to write")
    source.add_argument("--model-name", metavar="NAME", help="the architecture of a training checkpoint: an open_clip "
                        "name such as ViT-B-32 or ViT-B-32-quickgelu, or an open_clip model config .json")
    target = directions.add_parser(
        "to-open-clip", help="a CLIPModel folder -> open_clip's layout (open_clip_config.json + open_clip_model.safetensors)",
        description="Convert a CLIPModel folder (a model trained or converted here) into open_clip's Hub layout, so "
        "open_clip loads it with create_model_and_transforms('local-dir:OUT') or from the Hub.",
    )
    target.add_argument("model", metavar="MODEL", help="a folder written by save_pretrained (model, tokenizer, image processor)")
    target.add_argument("out", metavar="OUT", help="the folder to write")
    target.add_argument("--repo", metavar="ORG/NAME", help="the Hub repo OUT will be pushed to; open_clip loads a "
                        "tokenizer that is not CLIP's BPE from there")
    for sub in (source, target):
        sub.add_argument("--force", action="store_true", help="replace OUT if it exists and holds only files this "
                         "conversion writes (an OUT that is, holds or lies inside the input is always refused)")
        _add_verbosity(sub, default=argparse.SUPPRESS)
    parser.set_defaults(handler=_run_convert)


def _add_report(commands: Any) -> None:
    parser = commands.add_parser("report", help="write RUN/report/index.html: the run's data, pictures, curves and scores",
                                 description="Write RUN/report/index.html, one static page (opens from disk, no network) "
                                 "with the run's stages, data, sample pictures, training curves and scores.")
    parser.add_argument("--run", required=True, help="the run directory")
    _add_verbosity(parser)
    parser.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    _write_report(RunDir(args.run))
    return 0


def _write_report(run: RunDir) -> None:
    from entitynet import report

    print(f"Report: {report.write(run.root)}")


def _add_run(commands: Any) -> None:
    parser = _stage_parser(
        commands,
        "run",
        f"Run every stage in order ({', '.join(pipeline.names())}) on one configuration; "
        "finished stages are skipped, an interrupted one resumes.",
        Config,
        "",
    )
    parser.add_argument("--from", dest="first", choices=pipeline.names(), metavar="STAGE",
                        help="start at this stage (the ones before it must have finished); with --force, redo "
                        "only it and the stages after it, e.g. --from train --force trains again")
    parser.add_argument("--until", choices=pipeline.names(), help="stop after this stage")
    add_flags(parser, Config, "", only={"--contact"})  # the flag the stages that ask the web share
    parser.set_defaults(handler=_run_all)


def _positive(text: str) -> int:
    number = _integer(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return number


def _not_negative(text: str) -> int:
    number = _integer(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return number


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {number}")
    return number


def _split_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of splits, got {text!r}")
    return names


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.domain, args.assignments, flag_values(args))


def _run_stage(args: argparse.Namespace) -> int:
    """`entitynet <stage>`: the configuration from its layers, the stage through the runner."""
    entry, run = pipeline.stage(args.command), RunDir(args.run)
    options = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
               for flag in COMMAND_OPTIONS.get(entry.name, {})}
    _report(entry, entry.run(_config(args), run, args.force, **options), run)  # build's summary says how to open the dataset
    return 0


def _report(stage: pipeline.Stage, result: StageResult, run: RunDir) -> None:
    state = "already complete" if result.skipped else f"done in {result.seconds:.1f}s"
    print(f"{stage.name}: {state}: {', '.join(str(path) for path in stage.outputs(run))}")
    print(stage.summary(result.stats))


def _run_import(args: argparse.Namespace) -> int:
    stage, run = pipeline.stage("import"), RunDir(args.run)
    result = stage.run(None, run, args.force, source=args.source, splits=args.splits, revision=args.revision,  # type: ignore[arg-type]
                       url_column=args.url_column, caption_column=args.caption_column, rows_per_part=args.rows_per_part)
    _report(stage, result, run)
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from entitynet.export import export_webdataset

    run = RunDir(args.run)
    dataset = run.path(layout.DATASET)
    if not dataset.is_dir():
        raise MissingInput(f"export: {dataset} does not exist; run 'entitynet build --run {run.root}' first")
    out = Path(args.out) if args.out else run.path(layout.EXPORT) / "webdataset"
    result = export_webdataset(dataset, out, args.samples_per_shard)
    replaced = " (the earlier export there was replaced whole)" if result["replaced"] else ""
    print(f"export: {result['total']} samples in {out}{replaced}")
    for name, count in result["samples"].items():
        print(f"  {name}: {count}")
    print(f'read it back: load_dataset("webdataset", data_files="{out}/living/train-*.tar")')
    return 0


def _run_push(args: argparse.Namespace) -> int:
    from entitynet import push

    folder = Path(args.folder)
    if args.dry_run:
        files = push.plan(folder, args.what)
        for path, size in files:
            print(f"{size:>14,}  {path}")
        print(f"{sum(size for _, size in files):>14,}  bytes in {len(files)} files would go to "
              f"{push.hub_url(args.repo, args.what)}{' (private)' if args.private else ''}")
        return 0
    try:
        result = push.push(folder, args.repo, args.what, args.private)
    except Exception as error:  # huggingface_hub raises many kinds; none may carry the token out
        print(f"entitynet push: error: {push.redacted(error)}", file=sys.stderr)
        return 1
    print(f"pushed {result['files']} files ({result['bytes']:,} bytes) to {push.hub_url(result['repo'], args.what)}")
    if result.get("dataset"):
        print(f"its card names the dataset it was trained on: {push.hub_url(result['dataset'], 'dataset')}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from entitynet import summary
    from entitynet.demo import EXPLANATION, run_demo

    run = RunDir(args.out)

    def report(stage: pipeline.Stage, result: StageResult) -> None:
        state = "already complete" if result.skipped else f"done in {result.seconds:.1f}s"
        print(f"{stage.name}: {state}")
        print(stage.summary(result.stats))

    print("entitynet demo: offline, on the bundled sample; the images are SYNTHETIC drawings, not photographs.")
    made = run_demo(run.root, args.size, args.force, report, train=args.train, seed=args.seed)
    print("\n" + "\n".join(summary.lines(made)))
    if made["evaluations"]:
        print("\n" + EXPLANATION)
    _write_report(run)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    try:
        from entitynet.training.evaluation.command import run
    except ImportError as error:
        if error.name not in TRAIN_EXTRA:
            raise
        return missing_extra("eval", error)
    return run(args)


def _run_convert(args: argparse.Namespace) -> int:
    try:
        from entitynet.training import convert
    except ImportError as missing:
        return missing_extra("convert", missing)
    try:
        if args.direction == "open-clip":
            done = convert.convert_open_clip(args.source, args.out, args.model_name, args.force)
            print(f"converted {done.source} -> {done.folder}: context length {done.context_length}, {done.activation}, "
                  f"images {done.image_size} px; embeddings within {done.max_abs_diff:.1e} of open_clip's")
            print(f'load it: CLIPModel.from_pretrained("{done.folder}") or '
                  f'pipeline("zero-shot-image-classification", model="{done.folder}")')
        else:
            out = convert.convert_to_open_clip(args.model, args.out, args.repo, args.force)
            print(f"converted {args.model} -> {out} in open_clip's layout")
            print(f'load it: open_clip.create_model_and_transforms("local-dir:{out}")')
    except convert.ConversionError as error:
        print(f"entitynet convert: error: {error}", file=sys.stderr)
        return 1
    return 0


def _run_all(args: argparse.Namespace) -> int:
    from entitynet import summary

    run, config = RunDir(args.run), _config(args)
    results: dict[str, StageResult] = {}

    def report(stage: pipeline.Stage, result: StageResult) -> None:
        results[stage.name] = result
        _report(stage, result, run)

    pipeline.run_stages(config, run, pipeline.stages(first=args.first, last=args.until), args.force, report)
    if rank_and_world()[0] == 0:
        print("\n" + "\n".join(summary.lines(summary.write(config, run, results))))
        _write_report(run)
    return 0


@contextlib.contextmanager
def quiet_libraries(demo: bool = False) -> Iterator[None]:
    """What a person reads of `entitynet run` / `demo`: our stage lines and summary, not the
    libraries' own progress bars beside ours (datasets' per split, transformers' per weight file)
    nor their notes; -v brings them back. The demo also leaves out our own info lines (the
    trainer's steps, the kg stage's sources): its stage lines and summary are printed, not logged.
    Everything is put back afterwards (tests call main() in one process)."""
    variables = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                 "TRANSFORMERS_VERBOSITY": "error"}
    loggers = {"accelerate": logging.WARNING, **({"entitynet": logging.WARNING} if demo else {})}
    saved_variables = {name: os.environ.get(name) for name in variables}
    saved_levels = {name: logging.getLogger(name).level for name in loggers}
    for name, value in variables.items():
        os.environ.setdefault(name, value)
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, value in saved_variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def configure_logging(level: int) -> None:
    """-q: warnings, default: info, -v: debug for entitynet, -vv: debug for everything.

    Installs a stderr handler only if the program has none (an embedding app or pytest keeps its own).
    """
    logging.basicConfig(level=logging.DEBUG if level >= 2 else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level >= 2:
        logging.getLogger().setLevel(logging.DEBUG)
    logging.getLogger("entitynet").setLevel(logging.WARNING if level < 0 else logging.INFO if level == 0 else logging.DEBUG)
