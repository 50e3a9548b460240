"""The `resnets` command line: one sub-command per job, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin, get_type_hints

from .deploy.runtimes import RUNTIMES
from .experiments.options import BUDGETS, DATA_SETS, EXPERIMENTS
from .models import create_model, get_entry, list_models, summarize
from .train.config import PRESETS, RESUMABLE, TrainConfig, apply_preset

if TYPE_CHECKING:
    from .data import DataBundle
    from .train.metrics import EvalResult
    from .trained import Trained

Handler = Callable[[argparse.Namespace], int]


def cmd_list(args: argparse.Namespace) -> int:
    """Print every model with its depth and description."""
    for name in list_models(args.filter):
        entry = get_entry(name)
        print(f"{name:<26}{entry.spec.depth:>6}  {entry.description}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Print the layer table, parameters and MACs of one model, or of the model a run folder or weights file
    holds (at the input it was trained at)."""
    if Path(args.model).exists():
        from .trained import load_trained

        trained = load_trained(args.model)
        model = trained.model
        size = tuple(args.input_size) if args.input_size else (model.in_channels, *trained.image_size)
    else:
        channels = args.input_size[0] if args.input_size else 3
        # the architecture only: a tagged name ("resnet50d.ra2_in1k") downloads nothing here
        model = create_model(args.model, num_classes=args.num_classes, in_channels=channels, pretrained=False)
        size = tuple(args.input_size) if args.input_size else None
    print(summarize(model, size).table())
    return 0


def train_argv(args: argparse.Namespace) -> list[str]:
    """The `train` command line that parsed into `args`, without --nproc: what each torchrun worker runs."""
    argv = ["train", "--preset", args.preset] + (["--resume", args.resume] if args.resume else [])
    argv += ["--overwrite"] if args.overwrite else []
    for f in fields(TrainConfig):
        if hasattr(args, f.name):
            flag, value = "--" + f.name.replace("_", "-"), getattr(args, f.name)
            if isinstance(value, bool):
                argv += [flag if value else "--no-" + flag[2:]]
            else:
                argv += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return argv + (["--debug"] if args.debug else [])


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) a model; every TrainConfig field is a flag, given flags override the preset."""
    from .machine import set_threads
    from .train import train
    from .train.distributed import is_main_process, launch, launched_by_torchrun

    if args.nproc is not None:
        return launch(args.nproc, train_argv(args))
    if not launched_by_torchrun():  # (a torchrun worker gets its share of the cores from the launcher)
        reason = set_threads(args.threads)
        if reason and not getattr(args, "quiet", False):
            print(f"resnets train: {reason}", flush=True)
    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if args.resume and args.preset != "default":
        raise ValueError("--preset cannot change a resumed run's recipe; leave it out with --resume")
    history = train(args.preset, resume=args.resume, overwrite=args.overwrite, **options)
    if is_main_process() and history.final is not None and not history.config.quiet:
        print(f"report: {history.run_dir / 'report.md'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate trained weights on a data set's test (or validation) split: top-1/top-5, balanced accuracy,
    macro-F1, ROC-AUC, PR-AUC, per-class table, confusion matrix; for two classes, sensitivity/specificity.
    Single view first, as the literature compares; flip TTA as a second figure when asked or the run used it."""
    from .data import make_loader
    from .train.loop import evaluate
    from .train.runtime import resolve_runtime
    from .trained import load_trained

    trained = load_trained(args.weights, args.model, args.num_classes, args.in_channels)
    net, recorded = trained.model, recorded_data(args, trained.path)
    bundle = evaluation_data(recorded, trained)
    if args.positive is not None and (bundle.num_classes != 2 or args.positive not in bundle.classes):
        raise ValueError(
            f"--positive {args.positive!r} must name one of two classes: {', '.join(bundle.classes[:10])}"
        )
    runtime = resolve_runtime(TrainConfig(device=args.device))
    split = bundle.split(args.split)
    loader = make_loader(bundle, args.split, args.batch_size, train=False, device=runtime.device)
    result = evaluate(net.to(runtime.device), loader, bundle.num_classes, runtime)
    top5 = f"  top-5 {100 * result.top5:.2f}%" if result.top5 is not None else ""
    print(f"{trained.path}: {bundle.name} {args.split} ({len(split)} images, single view) top-1 "
          f"{100 * result.top1:.2f}%{top5}  loss {result.loss:.4f}")  # fmt: skip
    if args.tta if args.tta is not None else recorded.tta:
        tta = evaluate(net, loader, bundle.num_classes, runtime, tta=True)
        print(f"  with flip TTA (each image and its mirror averaged, as the run evaluated): top-1 "
              f"{100 * tta.top1:.2f}%  loss {tta.loss:.4f}")  # fmt: skip
    print_details(result, bundle.classes, args.positive, args.threshold)
    return 0


def print_details(result: EvalResult, classes: list[str], positive: str | None, threshold: float) -> None:
    """The rest of `evaluate`'s answer: the class-balanced metrics, operating point, per-class table, confusion."""
    extra = {
        k: v
        for k, v in result.summary().items()
        if k in ("balanced_accuracy", "macro_f1", "roc_auc", "pr_auc")
    }
    print("  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in extra.items() if v is not None))
    if len(classes) == 2 and result.probs is not None:
        index = classes.index(positive) if positive else 1
        op = result.operating_point(index, threshold)
        print(f"positive class {classes[index]}: sensitivity {op.sensitivity:.4f}  specificity "
              f"{op.specificity:.4f} at threshold {op.threshold:g}")  # fmt: skip
    print(result.per_class_table(classes))
    print("confusion matrix (rows: true, columns: predicted)")
    for name, row in zip(classes, result.confusion.tolist(), strict=True):
        print(f"{name[:14]:<15}" + " ".join(f"{v:>5}" for v in row))


@dataclass(frozen=True)
class Recorded:
    """What `evaluate` reads, from the flags, else the run's config.json, else the weights' metadata."""

    data: str
    root: str | None
    val_split: float
    tta: bool  # the run evaluated with flip TTA
    own: bool  # the data the run trained on (split as it split them)


def recorded_data(args: argparse.Namespace, weights: Path) -> Recorded:
    """The data set, its root and validation split to evaluate on: the flags, else what the run recorded
    (its config.json beside the weights, else the weights' metadata), else Fashion-MNIST."""
    from .models.metadata import read_meta
    from .train.folder import CONFIG

    config = weights.parent / CONFIG
    run = TrainConfig.load(config) if config.is_file() else None
    recorded = (run.data if run else None) or read_meta(weights).get("data")
    data = args.data or recorded or "fashion-mnist"
    own = data == recorded
    root = args.data_root or (run.data_root if run and own else None)
    val_split = args.val_split if args.val_split is not None else (run.val_split if run and own else 0.0)
    return Recorded(data, root, val_split, bool(run and run.tta), own)


def evaluation_data(recorded: Recorded, trained: Trained) -> DataBundle:
    """The data to evaluate `trained` on, normalised as it trained: the run's own data split as it was split;
    another data set whose classes are the model's; or any bare folder of class folders (all of it tests)."""
    from .data import load_dataset
    from .data.load import load_class_folders
    from .models.metadata import read_meta

    net, meta = trained.model, read_meta(trained.path)
    path = Path(recorded.data.removeprefix("folder:")) if recorded.data.startswith("folder:") else None
    if path is not None and not recorded.own and not (path / "train").is_dir():
        bundle = load_class_folders(path, trained.classes, f"{trained.path}'s classes", net.in_channels,
                                    trained.image_size[0])  # fmt: skip
    else:
        bundle = load_dataset(recorded.data, recorded.root, channels=net.in_channels,
                              image_size=trained.image_size[0], val_split=recorded.val_split)  # fmt: skip
    # image folders are resized and centre-cropped as the weights were evaluated (--eval-resize), as predict does
    bundle = bundle.evaluated_at(trained.resize / max(trained.image_size))
    if bundle.num_classes != net.num_classes:
        raise ValueError(
            f"{trained.path} predicts {net.num_classes} classes but {bundle.name} has {bundle.num_classes}; "
            "evaluate on the data set it was trained for"
        )
    if meta.get("classes") and meta["classes"] != bundle.classes:
        raise ValueError(
            f"{trained.path} was trained on {meta.get('data', 'other data')} with classes {', '.join(meta['classes'][:4])}"
            f", ... but {bundle.name} has {', '.join(bundle.classes[:4])}, ...: evaluate on the data it was trained for"
        )
    if "mean" in meta:  # our weights: normalise as in training, not as the data's default
        bundle.mean, bundle.std = trained.mean, trained.std  # (CIFAR stats for CIFAR images in a folder:)
    return bundle


def cmd_predict(args: argparse.Namespace) -> int:
    """Top-k classes with probabilities for image files, folders or glob patterns, in batches; unreadable
    images are reported on stderr one line each (exit 2) without hiding the others' answers. With --output
    the answers go to a CSV or JSON file instead of stdout."""
    from .files import atomic_write_text
    from .machine import set_threads
    from .train.progress import progress
    from .trained import cam_names, expand_images, load_trained, predict, predictions_csv, write_cam

    if args.output and Path(args.output).suffix not in (".csv", ".json"):
        raise ValueError(f"--output {args.output}: write .csv or .json")
    refuse_run_file(args.output, "--output")
    set_threads()  # the cores other processes leave idle (ONNX Runtime is given as many)
    trained = load_trained(args.weights, args.model, args.num_classes, args.in_channels)
    paths = expand_images(args.images)
    if not paths:
        raise ValueError(f"no image files found in {' '.join(args.images)}")
    cams = {p: Path(args.cam) / name for p, name in cam_names(paths).items()} if args.cam else {}
    for target in cams.values():
        refuse_run_file(target, "--cam")
    answers, failed = [], 0
    shown = progress(
        predict(trained, paths, args.top_k, args.batch_size, args.runtime),
        "predict",
        enabled=bool(args.output),
    )
    for path, top in shown:
        if isinstance(top, Exception):
            print(f"resnets predict: error: {path}: {one_line(top)}", file=sys.stderr)
            failed += 1
        elif args.output:
            answers.append((path, top))
        else:
            print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))
        if args.cam and not isinstance(top, Exception):
            write_cam(path, trained, cams[path])
    if args.output:
        rows = [
            {"image": str(p), "top": [{"class": c, "probability": q} for c, q in top]} for p, top in answers
        ]
        text = predictions_csv(answers) if args.output.endswith(".csv") else json.dumps(rows, indent=1)
        atomic_write_text(args.output, text)
        print(
            f"wrote {len(answers)} predictions to {args.output}"
            + (f"; {failed} image(s) failed" if failed else "")
        )
    return 2 if failed else 0


def refuse_run_file(path: str | Path | None, flag: str) -> None:
    """Refuse to write a file a training run owns (its config, weights, results): it would break the run."""
    from .train.folder import owner_of

    if path is not None and (owner := owner_of(path)) is not None:
        raise ValueError(
            f"{flag} {path} is a file of the run in {owner}, which it would destroy: write elsewhere"
        )


def cmd_lr_find(args: argparse.Namespace) -> int:
    """LR range test with the training flags; prints the suggested --lr (and plots the curve with --out)."""
    from .train.lr_find import lr_find, plot_lr_find

    if args.out is not None:  # checked before the test runs, not after
        if Path(args.out).suffix.lower() not in (".png", ".pdf", ".svg", ".jpg"):
            raise ValueError(f"--out {args.out}: write a .png, .pdf, .svg or .jpg plot")
        refuse_run_file(args.out, "--out")
    options = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if f.name not in WHOLE_RUN_ONLY and hasattr(args, f.name)
    }
    cfg = apply_preset(args.preset, options)
    lrs, losses, suggestion = lr_find(cfg, args.start, args.end, args.steps)
    if args.out:
        plot_lr_find(lrs, losses, suggestion, args.out)
    if not cfg.quiet:
        stop = "" if len(lrs) == args.steps else f" (stopped early at lr {lrs[-1]:.2e}: the loss diverged)"
        print(f"tried {len(lrs)} learning rates from {lrs[0]:.2e} to {lrs[-1]:.2e}{stop}; "
              f"lowest loss {min(losses):.4f} at lr {lrs[losses.index(min(losses))]:.2e}")  # fmt: skip
        if args.out:
            print(f"plot: {args.out}")
    print(f"suggested lr: {suggestion:.3g}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Fold BN and write trained weights as ONNX or pt2; check the file against PyTorch."""
    import torch

    from .deploy import FORMATS, export_model, fuse_bn, load_exported
    from .deploy.export import check_format
    from .files import atomic_write_text
    from .trained import load_trained, resolve_weights

    check_format(args.format, args.out)
    trained = load_trained(args.weights, args.model, args.num_classes, args.in_channels)
    if args.out:
        out = Path(args.out)
    elif Path(args.weights).exists():  # next to the weights file (or the run folder's model)
        out = resolve_weights(args.weights).with_suffix(FORMATS[args.format])
    else:  # named weights live in a library's cache: write here, named after them
        out = Path(f"{args.model}-{args.weights.replace(':', '-')}{FORMATS[args.format]}")
    model = fuse_bn(trained.model)
    size = tuple(args.input_size) if args.input_size else (model.in_channels, *trained.image_size)
    if size[0] != model.in_channels:
        raise ValueError(
            f"--input-size {' '.join(map(str, size))}: {trained.path} takes {model.in_channels} channel(s)"
        )
    path = export_model(model, out, args.format, size)
    x = torch.randn(3, *size)  # a batch size other than the export example's: the batch must stay dynamic
    with torch.no_grad():
        diff = (load_exported(path)(x) - model(x)).abs().max().item()
    sidecar = atomic_write_text(Path(f"{path}.json"), json.dumps(trained.preprocessing(), indent=1))
    print(
        f"wrote {path} ({args.format}, input N x {' x '.join(map(str, size))}; max |diff| vs PyTorch {diff:.1e})"
        f" and its preprocessing (resize, crop, mean, std, classes) to {sidecar}"
    )
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Training-step and inference throughput, ours vs torchvision vs ONNX Runtime, against the matmul peak:
    of zoo models, or of the model a run trained, at the input it recorded (flags override)."""
    import json

    from .bench import BenchConfig, format_report, run_benchmark
    from .files import atomic_write_text

    if args.run is not None and (args.models is not None or args.cifar_models is not None):
        raise ValueError("give a run or --models/--cifar-models, not both: a run times its own model")
    chosen = {k: v for k, v in vars(args).items() if k in BenchConfig.__dataclass_fields__ and v is not None}
    for key in ("models", "cifar_models", "runtimes"):
        if key in chosen:
            chosen[key] = tuple(chosen[key])
    config = BenchConfig.quick(**chosen) if args.quick else BenchConfig(**chosen)
    result = run_benchmark(config)
    print(format_report(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Run one experiment that shows why ResNets work; it writes report.md, plots and raw numbers."""
    from .experiments import ExperimentOptions, run_experiment

    options = ExperimentOptions(budget=args.budget, data=args.data, data_root=args.data_root, out=args.out,
                                seed=args.seed, seeds=args.seeds, device=args.device, weights=args.weights,
                                threads=args.threads)  # fmt: skip
    outcome = run_experiment(args.name, options)
    print(f"{args.name}: {outcome.verdict}; report: {outcome.report}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    """Train a full-scale study's missing units (each recorded as it finishes) and rewrite its report."""
    from .experiments.studies import STUDIES, park, run_study, where

    folders = where(args.name, args.out, args.work, args.data_root, args.device, args.loader_workers)
    if args.park:
        lines = park(STUDIES[args.name], folders)
        print("\n".join(lines) or f"{args.name}: no unfinished unit with a checkpoint in {folders.work}")
        return 0
    arms = [a for a in (args.arms or "").split(",") if a]
    report = run_study(STUDIES[args.name], folders, seeds=args.seeds, arms=arms,
                       max_units=0 if args.report_only else args.max_units, threads=args.threads,
                       mixed_commits=args.mixed_commits)  # fmt: skip
    print(f"{args.name}: report {report}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    """What `--weights NAME` and `create_model(weights=NAME)` take, per model: ImageNet top-1, file size, and
    whether the file is in the local cache (else where it downloads from)."""
    from .models.pretrained import cache_dirs, default_weights
    from .models.registry import named_weights

    if args.model:
        get_entry(args.model)  # an unknown name fails here, with close names
    models = [args.model] if args.model else list_models()
    print(f"{'model':<18}{'weights':<30}{'top-1':>7}{'size':>10}  cached  file (or URL)")
    for model in models:
        records = named_weights(model)
        if not records and args.model:
            print(f"{model}: no named weights (torchvision and timm have none): train it or give a file")
        for r in records:
            label = r.name + (" (DEFAULT)" if r.name == default_weights(model) else "")
            top1 = "-" if r.accuracy is None else f"{r.accuracy:.2f}%"
            print(f"{model:<18}{label:<30}{top1:>7}{r.size_mb:>7.1f} MB  {'yes' if r.cached else 'no':<6}  "
                  f"{r.file if r.cached else r.url}")  # fmt: skip
    print("caches: " + "; ".join(f"{source} {where}" for source, where in cache_dirs().items()))
    return 0


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (batch sizes, counts, sizes), refused in one line otherwise."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def probability(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def add_config_flags(parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> None:
    """One flag per TrainConfig field (--batch-size for batch_size), except `skip`, its help text taken from
    the field; unset flags keep the preset's value."""
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name not in skip:
            default = f"{f.default:g}" if isinstance(f.default, float) else f.default  # 4/3 as 1.33333
            parser.add_argument("--" + f.name.replace("_", "-"), default=argparse.SUPPRESS,
                                help=f"{f.metadata['help']} (default: {default})", **flag_kind(hints[f.name]))  # fmt: skip


def flag_kind(hint: Any) -> dict[str, Any]:
    """argparse's type, choices, nargs or action for a TrainConfig field of type `hint`."""
    kinds = (
        [hint]
        if get_origin(hint) is Literal
        else [t for t in get_args(hint) or (hint,) if t is not type(None)]
    )
    kind = kinds[0]
    if kinds == [bool]:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(kind) is Literal:
        return {"choices": get_args(kind)}
    if get_origin(kind) is tuple:  # e.g. --milestones 0.5 0.75
        return {"type": get_args(kind)[0], "nargs": "+"}
    if get_origin(kind) is dict:  # e.g. --spec-overrides '{"stem": "cifar"}'
        return {"type": json.loads, "metavar": "JSON"}
    return {"type": kind, "metavar": kind.__name__.upper()}


def add_input_size(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--input-size", nargs=3, type=positive_int, metavar=("C", "H", "W"), help=help)


def add_foreign_weights_options(p: argparse.ArgumentParser) -> None:
    """Our weights files say which model they hold; torchvision/timm files need to be told."""
    group = p.add_argument_group("weights without our metadata (torchvision, timm)")
    group.add_argument("--model", default=None, help="model name")
    group.add_argument(
        "--num-classes",
        type=positive_int,
        default=None,
        help="default: the size of the file's classifier (another size is refused)",
    )
    group.add_argument("--in-channels", type=positive_int, default=None, help="default 3")


def add_list_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("list", "list the model zoo")
    p.add_argument("filter", nargs="?", help="only names containing this text")
    p.set_defaults(handler=cmd_list)


def add_summary_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("summary", "layer table, parameters and MACs of a model")
    p.add_argument("model", help="model name (see `resnets list`), or a run folder or weights file")
    add_input_size(p, "default 3 224 224 (CIFAR nets 3 32 32)")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="classifier size (default: the run's, else the model's own)")  # fmt: skip
    p.set_defaults(handler=cmd_summary)


def add_train_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("train", "train or fine-tune a model (default: the Fashion-MNIST recipe)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="named recipe (default: default; paper: He et al. 2016 section 4.2, ResNet-20 on CIFAR-10; d2l: d2l.ai section 8.6.4, d2l's own ResNet-18 on Fashion-MNIST at 96 px)")  # fmt: skip
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its checkpoint; only "
        f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} may change (e.g. more --epochs)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (by default a folder holding a run is refused)",
    )
    p.add_argument(
        "--nproc", type=positive_int, metavar="N", help="train with N processes on this machine (DistributedDataParallel "
        "via torchrun); --batch-size is per process and the default SGD lr is 0.1 x batch-size x N / 128",
    )  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: $OMP_NUM_THREADS, "
                   "else one per core that other processes leave idle, measured at the start)")  # fmt: skip
    add_config_flags(p)
    p.set_defaults(handler=cmd_train)


# training options that shape a whole run, not the range test's batches: lr-find does not offer them
WHOLE_RUN_ONLY = frozenset({"out", "epochs", "lr", "schedule", "milestones", "gamma", "warmup_epochs", "ema", "tta",
                            "monitor", "early_stop", "eval_every", "positive", "threshold", "test_limit"})  # fmt: skip


def add_lr_find_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("lr-find", "LR range test: suggest a learning rate for these training flags")
    p.add_argument(
        "--preset", default="default", choices=sorted(PRESETS), help="named recipe (default: default)"
    )
    p.add_argument("--start", type=float, default=1e-5, help="smallest LR tried (default 1e-5)")
    p.add_argument("--end", type=float, default=10.0, help="largest LR tried (default 10)")
    p.add_argument("--steps", type=positive_int, default=100, help="batches, one LR each (default 100)")
    p.add_argument("--out", default=None, metavar="PNG", help="also plot loss against LR to this file")
    add_config_flags(p, skip=WHOLE_RUN_ONLY)
    p.set_defaults(handler=cmd_lr_find)


def add_evaluate_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("evaluate", "evaluate trained weights on a data set")
    p.add_argument("weights", help="run folder or weights file")
    p.add_argument("--data", default=None, help="default: the data the run trained on (else fashion-mnist)")
    p.add_argument("--data-root", default=None, help="default: where the run found its data")
    add_foreign_weights_options(p)
    p.add_argument(
        "--batch-size", type=positive_int, default=256, help="images per forward pass (default 256)"
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("test", "val"),
        help="test (default) or val: a val/ folder, or the --val-split carved as in training",
    )
    p.add_argument("--val-split", type=float, default=None,
                   help="carve validation as training did, same seed (default: the run's own --val-split)")  # fmt: skip
    p.add_argument(
        "--positive", default=None, help="two classes: the class sensitivity refers to (default: the second)"
    )
    p.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="two classes: probability of --positive from which an image is called positive",
    )
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="also report flip TTA (each image and its mirror averaged) after the single-view figure "
                        "(default: when the run evaluated so)")  # fmt: skip
    p.add_argument(
        "--device", default="auto", help="auto (default: a GPU when there is one), cpu, cuda or cuda:N"
    )
    p.set_defaults(handler=cmd_evaluate)


def add_predict_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("predict", "classify image files with trained weights")
    p.add_argument("weights", help="run folder, weights file, or a weights name with --model")
    p.add_argument(
        "images", nargs="+", help="image files, folders (every image below) or quoted glob patterns"
    )
    p.add_argument(
        "--top-k", type=positive_int, default=5, help="classes per image, most probable first (default 5)"
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--output", default=None, metavar="FILE", help="write the answers to FILE (.csv or .json)")
    p.add_argument(
        "--cam",
        default=None,
        metavar="DIR",
        help="also write a Grad-CAM overlay of the predicted class per image: DIR/<name>.cam.png (with its folders' names where two images share a name)",
    )
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="what serves the BN-folded model: auto (default: ONNX Runtime on a CPU when installed, "
                   "else compiled), eager, compiled (Inductor) or onnxruntime")  # fmt: skip
    add_foreign_weights_options(p)
    p.set_defaults(handler=cmd_predict)


def add_export_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("export", "fold BN and export trained weights to ONNX or pt2 (dynamic batch)")
    p.add_argument("weights", help="run folder or weights file")
    p.add_argument("--format", default="onnx", help="onnx (default) or pt2 (torch.export)")
    p.add_argument(
        "--out",
        default=None,
        help="output file ending in .onnx or .pt2 (default: next to the weights file, "
        "or <model>-<name>.<format> here for named weights)",
    )
    add_foreign_weights_options(p)
    add_input_size(p, "default: the run's input format")
    p.set_defaults(handler=cmd_export)


def add_benchmark_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("benchmark", "training and inference throughput vs torchvision, ONNX Runtime and the matmul peak")
    p.add_argument("run", nargs="?", default=None,
                   help="a run folder or its weights file: time that trained model (its architecture, head, "
                   "channels and image size) instead of zoo models")  # fmt: skip
    p.add_argument("--models", nargs="+", default=None, help="ImageNet nets (default: resnet18 resnet50)")
    p.add_argument("--cifar-models", nargs="*", default=None, help="default: cifar_resnet20 cifar_resnet56")
    p.add_argument(
        "--batch-size", type=positive_int, default=None, help="default 32 (training and inference)"
    )
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="input side (default 224, CIFAR nets their own; a run: the size it recorded)")  # fmt: skip
    p.add_argument("--cifar-batch-size", type=positive_int, default=None, help="default 128")
    p.add_argument("--warmup", type=non_negative_int, default=None, help="default 2")
    p.add_argument("--repeats", type=positive_int, default=None, help="default 5 (the median is reported)")
    p.add_argument("--quick", action="store_true", help="fewer, shorter repeats: a smoke run")
    p.add_argument("--runtimes", nargs="*", default=None, choices=(*RUNTIMES[1:], "openvino"),
                   help="deploy runtimes to time (default: all; a peer that is not installed is skipped)")  # fmt: skip
    p.add_argument("--no-training", dest="training", action="store_const", const=False, default=None,
                   help="time inference only")  # fmt: skip
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads (default: all cores; idle ones only)"
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the full result as JSON")
    p.set_defaults(handler=cmd_benchmark)


def add_experiment_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("experiment", "measure why ResNets work; writes a report with a verdict")
    p.add_argument("name", choices=EXPERIMENTS, help="; ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items()))
    p.add_argument("--budget", default="quick", choices=BUDGETS, help="tiny: seconds (smoke test); quick (default): "
                   "minutes on a CPU; cpu: ~30 min on 2 cores with 3 seeds, sized to resolve the claim; full: a GPU run")  # fmt: skip
    p.add_argument("--data", default=None, choices=DATA_SETS,
                   help="default: cifar10 for the paper's CIFAR claims at the cpu budget, else fashion-mnist")  # fmt: skip
    p.add_argument("--data-root", default=None, help="where the data set lies (default: standard places)")
    p.add_argument("--out", default=None, help="report folder (default: runs/experiments/NAME-TIME)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0); the others follow it")
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        help="seeds per net (default: 3 at the cpu budget, else 1)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--weights", default=None, help="resolution: evaluate these weights instead of training")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: torch's; 1 is far faster on a busy shared machine)")  # fmt: skip
    p.set_defaults(handler=cmd_experiment)


def add_study_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    from .experiments.studies import STUDIES

    p = add(
        "study", "a seed's claim at full scale: resumable units (one net, one seed), a report from those done"
    )
    titles = "; ".join(f"{k}: {s.title}" for k, s in STUDIES.items())
    p.add_argument("name", choices=STUDIES, help=titles.replace("%", "%%"))  # argparse formats help with %
    p.add_argument("--out", default=None, help="report and units/ folder (default: runs/studies/NAME)")
    p.add_argument("--work", default=None, help="the units' run folders (default: OUT/runs)")
    p.add_argument("--data-root", default=None, help="where the data set lies (default: standard places)")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds per arm (default: the study's)")
    p.add_argument("--arms", default=None, help="comma-separated arms to train (default: all)")
    p.add_argument(
        "--max-units", type=non_negative_int, default=None, help="train at most N units, then stop"
    )
    p.add_argument(
        "--report-only", action="store_true", help="only rewrite the report from the recorded units"
    )
    p.add_argument("--park", action="store_true",
                   help="copy the unfinished units' checkpoints from the work folder to OUT/parked/ (commit them "
                        "with the units: a later session or machine resumes them), then exit")  # fmt: skip
    p.add_argument("--mixed-commits", action="store_true",
                   help="add units although the recorded ones ran at another commit (the report lists each)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--loader-workers", type=non_negative_int, default=0,
                   help="data-loading processes per unit for image-folder data, as train's --workers (default 0: "
                        "in the unit's process, right for a one-thread CPU worker; a GPU wants some)")  # fmt: skip
    p.set_defaults(handler=cmd_study)


def add_weights_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("weights", "named weights per model (--weights NAME): ImageNet top-1, size, whether cached")
    p.add_argument("model", nargs="?", help="one model (default: every model that has some)")
    p.set_defaults(handler=cmd_weights)


COMMANDS = (
    add_list_command,
    add_summary_command,
    add_train_command,
    add_lr_find_command,
    add_evaluate_command,
    add_predict_command,
    add_export_command,
    add_benchmark_command,
    add_experiment_command,
    add_study_command,
    add_weights_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnets", description="The ResNet family: models, training, experiments."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])  # --debug on every sub-command

    for add_command in COMMANDS:
        add_command(add)
    return parser


def one_line(error: BaseException, limit: int = 400) -> str:
    """The error's message on one line (some, like load_state_dict's, span many), cut to `limit` chars."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 30] + " ... (--debug shows it all)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run one sub-command. Design rule: any failure ends in one line on stderr and a non-zero
    exit — 2 for what the user can fix (bad input, files, data), 1 for anything unexpected — and `--debug`
    shows the traceback instead."""
    from safetensors import SafetensorError

    args = build_parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 are printed as their own bytes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    try:
        return args.handler(args)
    except BrokenPipeError:  # e.g. `resnets list | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        expected = isinstance(e, (ValueError, OSError, RuntimeError, SafetensorError))
        kind = (
            "error" if expected else f"unexpected {type(e).__name__} (a bug: please report it with --debug)"
        )
        print(f"resnets {args.command}: {kind}: {one_line(e)}", file=sys.stderr)
        return 2 if expected else 1


if __name__ == "__main__":
    sys.exit(main())
