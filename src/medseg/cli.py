"""The ``medseg`` command: train, evaluate, predict, report, compare, data, models.

Each verb parses its arguments, loads a recipe and calls one function below the CLI. Errors a
user can cause (:class:`~medseg.errors.MedsegError`: bad config keys, unknown names, bad data
files, missing checkpoints) are printed as one line ``medseg: error: ...`` with exit status 2,
never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

from medseg import __version__
from medseg.errors import MedsegError
from medseg.log import counted

#: Warnings known to be harmless, silenced by message and category (never whole categories):
#: ``(category, message regex, why)``. Anything else a library warns about reaches the user.
KNOWN_HARMLESS_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (
        FutureWarning,
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        "Lightning 2.x calls torch's pytree API the old way on every step; no behaviour differs",
    ),
    (
        DeprecationWarning,
        r"`torch\.jit\.(save|load)` is deprecated",
        "TorchScript is an export format users ask for (medseg export --format torchscript)",
    ),
)

#: Lightning loggers whose INFO lines ("GPU available: False", "💡 Tip: ...", "Loading
#: `train_dataloader` to estimate ...") say nothing to a user of medseg; their warnings still show.
CHATTY_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)


def _quiet() -> None:
    """Silence the library chatter listed in :data:`KNOWN_HARMLESS_WARNINGS` and
    :data:`CHATTY_LOGGERS`, and nothing else."""
    import logging

    for category, message, _why in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def fresh_run_dir(base: Path) -> Path:
    """``base`` if unused, else ``base-2``, ``base-3``, ...: a default output never overwrites a run."""
    if not base.exists():
        return base
    n = 2
    while Path(f"{base}-{n}").exists():
        n += 1
    return Path(f"{base}-{n}")


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def print_metrics(metrics: dict) -> None:
    """Print the headline numbers of a metrics.json: its protocol's own lines
    (:func:`medseg.workflows.protocols.summary_lines`)."""
    from medseg.workflows.protocols import summary_lines

    for line in summary_lines(metrics):
        print(line)


def cmd_train(args: argparse.Namespace) -> int:
    from medseg.config import load_config
    from medseg.rundir import RunDir

    overrides = list(args.set or [])
    if args.data_root is not None:
        overrides.append(f"data.root={args.data_root}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_epochs is not None:
        overrides.append(f"train.max_epochs={args.max_epochs}")
    config_path = args.config
    if config_path is None and args.resume and args.out is not None and RunDir(args.out).config.is_file():
        config_path = RunDir(args.out).config  # the run's own recipe
    cfg = load_config(config_path, overrides)
    if args.out is not None:
        run_dir = Path(args.out)
    else:
        name = "default" if config_path is None else f"{cfg.data.dataset}-{cfg.model.name}"
        run_dir = fresh_run_dir(Path("runs") / name)
    print(f"medseg train: {cfg.model.name} on {cfg.data.dataset} -> {run_dir}")
    from medseg.workflows.train import train  # after the recipe is checked: Lightning takes seconds to import

    summary = train(cfg, run_dir, resume=args.resume, evaluate_after=False if args.no_eval else None)
    if not summary:  # a non-zero DDP rank
        return 0
    print(
        f"trained {counted(summary['steps'], 'step')} / {counted(summary['epochs'], 'epoch')} in "
        f"{summary['train_seconds']:.1f} s; "
        f"best validation Dice {_fmt(summary['best_val_dice'])}"
    )
    if "eval" in summary:
        print_metrics(summary["eval"])
        rd = RunDir(run_dir)
        print(f"results: {rd.evaluation(cfg.eval.split).root}; report: {rd.report()}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from medseg.errors import ConfigError
    from medseg.rundir import RunDir
    from medseg.workflows.evaluate import evaluate, evaluate_predictions

    if (args.run is None) == (args.predictions is None):
        raise ConfigError("medseg evaluate needs either --run RUN_DIR or --predictions DIR (with --dataset)")
    if args.predictions is not None:
        if args.dataset is None:
            raise ConfigError("medseg evaluate --predictions needs --dataset NAME (see medseg data list)")
        overrides = [f"threshold={args.threshold}"] if args.threshold is not None else []
        metrics = evaluate_predictions(
            args.predictions,
            args.dataset,
            args.data_root,
            split=args.split,
            protocol=args.protocol,
            out=args.output,
            dataset_args=_dataset_options(args.set),
            eval_overrides=overrides + list(args.eval_set or []),
            figures=not args.no_figures,
            show_progress=not args.no_progress,
        )
        out = Path(args.output) if args.output else Path(args.predictions) / f"eval-{args.split}"
        print_metrics(metrics)
        print(f"results: {out}; report: {out / 'report.html'}")
        return 0
    for flag in ("dataset", "data_root", "output", "set", "threshold", "eval_set"):
        if getattr(args, flag):
            raise ConfigError(f"--{flag.replace('_', '-')} goes with --predictions; a run evaluates its own recipe")
    metrics = evaluate(
        args.run,
        split=args.split,
        checkpoint=args.checkpoint,
        protocol=args.protocol,
        tta=args.tta,
        ensemble=list(args.model or []),
        batch_size=args.batch_size,
        device=args.device,
        inference=args.inference,
        figures=False if args.no_figures else None,
        show_progress=not args.no_progress,
    )
    print_metrics(metrics)
    out = Path(metrics["output"])
    page = RunDir(args.run).report(None if out.name == args.split else out.name)
    print(f"results: {out}; report: {page}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from medseg.workflows.predict import predict_folder

    models = args.model[0] if len(args.model) == 1 else list(args.model)
    written = predict_folder(
        models,
        args.input,
        args.output,
        threshold=args.threshold,
        fov_dir=args.fov,
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
        inference=args.inference,
        show_progress=not args.no_progress,
    )
    print(f"wrote {counted(len(written), 'file')} (probability maps and masks, NIfTI label maps) to {args.output}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from medseg.export.deploy import export_checkpoint

    report = export_checkpoint(
        args.model,
        args.output,
        fmt=args.format,
        fp16=args.fp16,
        int8=args.int8,
        calibration=args.calibration,
        data_root=args.data_root,
        size=args.size,
    )
    h, w = report["input_size"]
    print(
        f"wrote {report['path']}: {report['format']} {report['precision']}, {report['bytes'] / 1e6:.2f} MB, "
        f"input (N, C, H, W) with H and W multiples of {report['size_divisor']} ({report['spatial']}; checked at "
        f"{h}x{w})"
    )
    print(
        f"  relative error against PyTorch {report['rel_error']:.2e}; latency {report['latency_ms']:.1f} ms "
        f"(PyTorch eager {report['pytorch_latency_ms']:.1f} ms), batch 1 at {h}x{w}"
    )
    if "dice_change" in report:
        print(
            f"  test Dice {report['dice']:.4f} (checkpoint {report['checkpoint_dice']:.4f}, "
            f"change {report['dice_change']:+.4f})"
        )
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from medseg.atomic import write_text_atomic
    from medseg.errors import ConfigError
    from medseg.models import list_models
    from medseg.workflows.benchmark import benchmark, markdown_table, update_readme

    if args.network or args.all or args.model is not None:
        networks = list_models() if args.all else [n for n in (args.network or "").split(",") if n]
        doc = benchmark(
            networks,
            checkpoint=args.model,
            size=args.size,
            batch=args.batch,
            device=args.device,
            warmup=args.warmup,
            repeats=args.repeats,
            onnx=not args.no_onnx,
            int8=not args.no_int8,
            data_root=args.data_root,
        )
        print(markdown_table(doc), end="")
        write_text_atomic(args.output, json.dumps(doc, indent=2) + "\n")
        print(f"results: {args.output}")
    elif args.readme is None:
        raise ConfigError("medseg benchmark: give --network NAME[,NAME...], --all or -m CHECKPOINT")
    if args.readme is not None:
        if not Path(args.output).is_file():
            raise ConfigError(f"--readme: no benchmark file {args.output} (name one with -o)")
        changed = update_readme(args.readme, args.output)
        print(
            f"{args.readme}: section from {Path(args.output).name} {'rewritten' if changed else 'already up to date'}"
        )
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from medseg.atomic import write_text_atomic
    from medseg.errors import ConfigError
    from medseg.workflows.reproduce import list_recipes, recipes_dir, reproduce, update_readme, validate

    results = args.results if args.results is not None else Path(args.out) / "reproduction.json"
    failed = False
    if args.recipes or args.all_cpu or args.all or args.readme is None:
        configs = args.configs if args.configs is not None else recipes_dir()
        names = list_recipes(configs, args.recipes, all_cpu=args.all_cpu, all_recipes=args.all)
        doc = reproduce(
            names, args.out, data_root=args.data_root, resume=args.resume, configs=configs, overrides=args.set or []
        )
        print((Path(args.out) / "reproduction.md").read_text(), end="")
        print(f"results: {Path(args.out) / 'reproduction.json'}, .md, .html")
        if args.results is not None:
            validate(doc)
            write_text_atomic(args.results, json.dumps(doc, indent=2) + "\n")
            print(f"results copied to {args.results}")
        failed = any(r["status"] == "failed" for r in doc["recipes"])
    if args.readme is not None:
        if not Path(results).is_file():
            raise ConfigError(f"--readme: no results file {results} (name one with --results)")
        changed = update_readme(args.readme, results)
        print(f"{args.readme}: section from {Path(results).name} {'rewritten' if changed else 'already up to date'}")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from medseg.viz.report import write_report

    path = write_report(args.run, split=args.split, out=args.output)
    print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from medseg.viz.report import compare_runs, format_comparison, write_comparison

    rows = compare_runs(args.runs, split=args.split)
    print(format_comparison(rows))
    if args.output is not None:
        csv_path, html_path = write_comparison(rows, args.output)
        print(f"wrote {csv_path} and {html_path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from medseg.models import count_parameters, create_model, list_models, skip_init

    rows = []
    for name in list_models():
        with skip_init():  # counting needs no initialisation
            model = create_model(name)
        rows.append((name, count_parameters(model), type(model).__name__))
        del model
    if args.json:
        print(json.dumps([{"name": n, "parameters": p, "class": c} for n, p, c in rows], indent=2))
        return 0
    width = max(len("network"), *(len(n) for n, _, _ in rows)) + 2
    print(f"{'network':<{width}}{'parameters':>12}  class")
    for name, params, cls in rows:
        print(f"{name:<{width}}{params:>12,}  {cls}")
    return 0


def _dataset_options(items: Sequence[str] | None) -> dict:
    """``["annotator=2", "layer=DVC"]`` -> ``{"annotator": 2, "layer": "DVC"}`` (YAML scalars)."""
    import yaml

    from medseg.errors import ConfigError

    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def cmd_data_check(args: argparse.Namespace) -> int:
    from medseg.atomic import write_text_atomic
    from medseg.data.check import check_dataset

    report = check_dataset(args.dataset, args.data_root, split_file=args.split_file, **_dataset_options(args.set))
    print(report.text())
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report.to_dict(), indent=1))
    return 0 if report.ok else 1


def cmd_data_list(args: argparse.Namespace) -> int:
    from medseg.data import DATASETS, list_datasets
    from medseg.data.files import FileDataset

    names = list_datasets()
    width = max(len(n) for n in names) + 2
    print(f"{'dataset':<{width}}{'folder':<24}layout")
    for name in names:
        cls = DATASETS.get(name)
        if isinstance(cls, type) and issubclass(cls, FileDataset):
            print(f"{name:<{width}}{cls.folder:<24}{cls.layout}")
        else:
            print(f"{name:<{width}}{'(generated)':<24}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from medseg.rundir import RunDir

    parser = argparse.ArgumentParser(prog="medseg", description="Medical image segmentation: train, evaluate, predict.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def threads_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--threads",
            type=int,
            metavar="N",
            help="CPU threads for PyTorch (default: OMP_NUM_THREADS if set, else the cores this process "
            "may use: its CPU affinity and cgroup quota)",
        )

    p = sub.add_parser("train", help="train a recipe (no --config: the built-in synthetic default)")
    p.add_argument("--config", type=Path, help="recipe YAML, e.g. configs/drive/dscnet.yaml")
    p.add_argument("--data-root", help="dataset folder, e.g. ../shared/data/DRIVE")
    p.add_argument(
        "--out",
        type=Path,
        help="run directory (default: runs/default for the built-in recipe, runs/<dataset>-<network> with "
        "--config; -2, -3, ... appended when taken)",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        help="stop after N optimiser steps (the LR schedule keeps the recipe's max_epochs length, "
        "so --resume with a larger N continues exactly)",
    )
    p.add_argument("--max-epochs", type=int, help="stop after N epochs")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a recipe key, e.g. optim.lr=3e-4 (repeatable)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate the best checkpoint after training")
    threads_option(p)
    p.set_defaults(func=cmd_train)

    def inference_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tta",
            nargs="?",
            const="default",
            default=None,
            metavar="SET",
            help="test-time augmentation, probabilities averaged: default (flips + 90-degree rotations), "
            "flips, rotations, d4, or names such as hflip,vflip,rot90 (default: the recipe's eval.tta)",
        )
        p.add_argument(
            "--batch-size",
            type=int,
            help="images per forward pass (default: the recipe's eval.batch_size; 0 = automatic by image size)",
        )
        p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default cpu)")
        p.add_argument(
            "--inference",
            choices=("auto", "whole", "sliding"),
            help="whole image or sliding window (default: the recipe's eval.inference)",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        threads_option(p)

    p = sub.add_parser(
        "evaluate", help="evaluate a run (--run) or a folder of predictions (--predictions) with a protocol"
    )
    p.add_argument("--run", type=Path, help="run directory written by medseg train")
    p.add_argument("--predictions", type=Path, help="folder of probability maps / masks / NIfTI label maps, by stem")
    p.add_argument("--dataset", help="with --predictions: the dataset whose ground truth scores them")
    p.add_argument("--data-root", help="with --predictions: the dataset folder")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="with --predictions: dataset option (repeatable)"
    )
    p.add_argument(
        "--eval-set",
        action="append",
        metavar="KEY=VALUE",
        help="with --predictions: eval option, e.g. centerline_tolerance=3 or nsd_tolerance_mm=2",
    )
    p.add_argument("--threshold", type=float, help="with --predictions: binary threshold of the vessel protocol")
    p.add_argument("-o", "--output", type=Path, help="with --predictions: output folder (default DIR/eval-SPLIT)")
    p.add_argument("--split", default="test")
    p.add_argument("--protocol", help="vessel, octa, polyp, volume or multiclass (default: the recipe's / dataset's)")
    p.add_argument("--checkpoint", default="best", choices=RunDir.CHECKPOINTS)
    p.add_argument(
        "-m",
        "--model",
        action="append",
        type=Path,
        metavar="CKPT",
        help="with --run: a further checkpoint to ensemble with the run's (repeatable)",
    )
    p.add_argument("--no-figures", action="store_true", help="skip the per-image figures")
    inference_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="probability maps and masks for a folder of images")
    p.add_argument(
        "-m",
        "--model",
        required=True,
        action="append",
        type=Path,
        help="checkpoint (.ckpt) written by medseg train, or a file medseg export wrote (.onnx, .pt); "
        "repeat for an ensemble (probabilities averaged)",
    )
    p.add_argument(
        "-i",
        "--input",
        required=True,
        type=Path,
        help="folder of images (png, jpg, tif, gif, bmp) and/or volumes (.nii, .nii.gz, DICOM series folders), or one volume",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument("--threshold", type=float, help="mask threshold (default: the checkpoint's)")
    p.add_argument(
        "--fov",
        type=Path,
        metavar="DIR",
        help="FOV masks by stem (<stem>.<ext> or <stem>_mask.<ext>); default: computed from each image",
    )
    inference_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="a checkpoint as a checked, self-describing ONNX or TorchScript file")
    p.add_argument("-m", "--model", required=True, type=Path, help="checkpoint (.ckpt) written by medseg train")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="file format (default onnx)")
    p.add_argument("--fp16", action="store_true", help="ONNX: a float16 graph with float32 input and output")
    p.add_argument("--int8", action="store_true", help="ONNX: static int8 quantisation (onnxruntime, QDQ)")
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="images for int8 calibration (default: the training split under --data-root)",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        help="the recipe's dataset folder: calibration images and the test Dice change of the export",
    )
    p.add_argument("--size", type=int, help="side of the checked input (default: the recipe's inference window)")
    p.add_argument("-o", "--output", required=True, type=Path, help="file to write (.onnx, .pt)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "benchmark", help="parameters, FLOPs, memory, latency: eager, ONNX fp32 and int8, against the FLOP floor"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--network", help="registered network(s), comma-separated, at their recipe's input size")
    which.add_argument("--all", action="store_true", help="every registered network")
    which.add_argument("-m", "--model", type=Path, help="a checkpoint (.ckpt) written by medseg train")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input H W (default: the recipe's inference window), rounded up to the network's divisor",
    )
    p.add_argument("--batch", type=int, default=1, help="batch N (default 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of the eager row (default cpu)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls; the median is kept (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    p.add_argument("--no-onnx", action="store_true", help="eager PyTorch only")
    p.add_argument("--no-int8", action="store_true", help="no int8 row")
    p.add_argument("--data-root", type=Path, help="with -m: calibrate int8 on the recipe's training split there")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("runs/benchmark.json"),
        help="JSON to write (default runs/benchmark.json); with --readme alone, the file to read",
    )
    p.add_argument("--readme", type=Path, help="rewrite this README's section generated from the -o file")
    threads_option(p)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("reproduce", help="run recipes to their results; our numbers beside the papers' in one table")
    p.add_argument("--recipes", help="comma-separated recipe names, e.g. drive/dscnet_cpu,kvasir/pranet_cpu")
    p.add_argument("--all-cpu", action="store_true", help="every configs/*/*_cpu.yaml")
    p.add_argument("--all", action="store_true", help="every recipe (GPU scale too)")
    p.add_argument(
        "--data-root", type=Path, help="the folder holding every dataset under its usual name (../shared/data)"
    )
    p.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="runs and results (default runs/reproduce)")
    p.add_argument("--resume", action="store_true", help="continue unfinished runs (finished ones are always kept)")
    p.add_argument("--configs", type=Path, help="recipes folder (default: the checkout's configs/ or $MEDSEG_CONFIGS)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of every recipe (repeatable)")
    p.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help="also write the results here (e.g. benchmarks/results/cpu-2core.json); with --readme alone, "
        "the file to read (default OUT/reproduction.json)",
    )
    p.add_argument(
        "--readme",
        type=Path,
        metavar="FILE",
        help="rewrite FILE's section between the markers for the results file; without a recipe "
        "selection nothing trains",
    )
    threads_option(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("report", help="write RUN_DIR/report.html: metrics, paper's numbers, per-image table, figures")
    p.add_argument("run", type=Path, help="run directory, or an evaluation folder holding metrics.json")
    p.add_argument("--split", help="evaluated split (default: the only one, or test)")
    p.add_argument("-o", "--output", type=Path, help="HTML file (default RUN_DIR/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="several runs' metrics side by side, with parameter counts")
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument("--split", default="test")
    p.add_argument("-o", "--output", help="also write OUTPUT.csv and OUTPUT.html")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("data", help="inspect datasets: `medseg data check`, `medseg data list`")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser(
        "check", help="check a dataset folder: counts, pairing, sizes, modes, labels, FOV, class balance, splits"
    )
    q.add_argument("--dataset", required=True, help="registered dataset name (medseg data list)")
    q.add_argument("--data-root", help="the dataset folder (default: $MEDSEG_DATA/<folder> or ../shared/data/<folder>)")
    q.add_argument("--split-file", type=Path, help="JSON/YAML split file replacing the dataset's own split")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="dataset option, e.g. annotator=2 (repeatable)")
    q.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    q.set_defaults(func=cmd_data_check)
    q = data_sub.add_parser("list", help="list registered datasets with their expected layouts")
    q.set_defaults(func=cmd_data_list)

    p = sub.add_parser("models", help="list registered networks with their parameter counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    return parser


def _threads(args: argparse.Namespace) -> None:
    """Set the intra-op thread count of a verb that computes (``--threads``; see :mod:`medseg.threads`)."""
    if hasattr(args, "threads"):
        from medseg.threads import configure_threads

        choice = configure_threads(args.threads)
        if args.command == "train":
            print(f"medseg {args.command}: {choice.describe()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medseg`` console script; returns the exit status."""
    from medseg.threads import prepare_openmp

    prepare_openmp()  # before torch is loaded, or it has no effect
    _quiet()
    args = build_parser().parse_args(argv)
    try:
        _threads(args)
        return int(args.func(args) or 0)
    except MedsegError as exc:
        print(f"medseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
