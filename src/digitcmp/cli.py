"""The ``digitcmp`` command line."""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from pathlib import Path

from . import __version__
from .ablation import SWEEP_WEIGHTS, ablation_config
from .checkpoint import CheckpointError
from .data import SOURCES, DataError
from .experiment import RunError, run_experiment
from .files import atomic_write
from .models import MODELS, count_params
from .report import write_report
from .train import Config, source_for, train_rounds

STUDY_MODELS = ["baseline", "cnn", "siamese_aux"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def training_flags() -> argparse.ArgumentParser:
    """Flags shared by every command that trains; their defaults are Config's."""
    d = Config()
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("data and training")
    g.add_argument("--data", choices=SOURCES, default=d.data,
                   help="digit source: local/downloaded MNIST, the embedded 5k sample, or auto "
                        "(MNIST if available, else embedded) (default: %(default)s)")
    g.add_argument("--data-dir", default=d.data_dir, metavar="DIR",
                   help="directory with the MNIST IDX files (default: the cache dir, "
                        "$DIGITCMP_CACHE/mnist or the platform's user cache)")
    g.add_argument("--test-dir", default=d.test_dir, metavar="DIR",
                   help="draw the test pairs from the MNIST test split (the t10k IDX files) in "
                        "DIR instead of the source's own test pool (default: the source's)")
    g.add_argument("--pairs", type=positive_int, default=d.pairs,
                   help="train pairs and test pairs per round (default: %(default)s)")
    g.add_argument("--val-pairs", type=int, default=d.val_pairs, metavar="N",
                   help="hold N of the training pairs out as a validation split (records "
                        "val_error; choose hyperparameters on it, never on test pairs) "
                        "(default: %(default)s)")
    g.add_argument("--epochs", type=positive_int, default=d.epochs, help="(default: %(default)s)")
    g.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help="(default: %(default)s)")
    g.add_argument("--lr", type=non_negative_float, default=d.lr,
                   help="Adam learning rate (default: each model's own: 5e-4 for baseline and "
                        "cnn, 1e-3 for siamese_aux, as in the study)")
    g.add_argument("--weight-decay", type=non_negative_float, default=d.weight_decay,
                   help="Adam L2 weight decay (default: %(default)s)")
    g.add_argument("--aux-weight", type=non_negative_float, default=d.aux_weight,
                   help="weight of the auxiliary digit loss for models with a digit head "
                        "(default: each model's own: 1 for siamese_aux)")
    g.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    g.add_argument("--threads", type=positive_int, default=d.threads,
                   help="torch threads per training (default: %(default)s)")
    g.add_argument("--engine", choices=["stacked", "reference"], default=d.engine,
                   help="stacked: train a model's rounds as one network, with per-round data, "
                        "init, dropout, BatchNorm and Adam state (fast); reference: one plain "
                        "training loop per round (default: %(default)s)")
    return p


def run_flags(out: str) -> argparse.ArgumentParser:
    """Flags shared by the commands that run rounds into a run directory."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("rounds and execution")
    g.add_argument("--rounds", type=positive_int, default=15, help="(default: %(default)s)")
    g.add_argument("--out", default=out, metavar="DIR",
                   help="run directory; rerunning into it resumes (default: %(default)s)")
    g.add_argument("--executor", choices=["serial", "process", "ray"], default="process",
                   help="run rounds one after another, in parallel local processes, or on Ray "
                        "(pip install 'digitcmp[ray]') (default: %(default)s)")
    g.add_argument("--workers", type=positive_int, default=None,
                   help="parallel trainings for --executor process or a local Ray "
                        "(default: cores / threads)")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join for --executor ray (default: $RAY_ADDRESS, else "
                        "start a local Ray)")
    g.add_argument("--stack", type=positive_int, default=None, metavar="R",
                   help="rounds the stacked engine trains together (default: per model, as many "
                        "as keep a step's activations within 8 MiB: 10 for baseline, 1 for "
                        "the convnets); does not change results")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--save-checkpoints", action="store_true",
                   help="save every round's model in OUT/checkpoints/")
    return p


def config_from(args: argparse.Namespace, **extra) -> Config:
    return Config(data=args.data, data_dir=args.data_dir, test_dir=args.test_dir, pairs=args.pairs,
                  val_pairs=args.val_pairs, epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                  aux_weight=args.aux_weight, seed=args.seed, threads=args.threads,
                  engine=args.engine, plugins=list(args.plugin), **extra)


def cmd_models(args: argparse.Namespace) -> int:
    width = max(len(n) for n in MODELS)
    for name, cls in MODELS.items():
        print(f"{name:<{width}}  {count_params(cls()):>9,}  {cls.description}")
    return 0


def run_and_report(config: Config, args: argparse.Namespace) -> tuple[Path, list[dict]]:
    """Run config's missing rounds into args.out, then write its tables, figures and report.
    Returns the report's path and every round's result."""
    results = run_experiment(config, args.out, executor=args.executor, workers=args.workers,
                             progress=not args.no_progress, command=sys.argv,
                             save_checkpoints=args.save_checkpoints, stack=args.stack,
                             ray_address=args.ray_address)
    report, table = write_report(args.out)
    print(f"\nTable III ({args.out}):\n\n{table}")
    return report, results


def cmd_reproduce(args: argparse.Namespace) -> int:
    report, _ = run_and_report(config_from(args, models=args.models, rounds=args.rounds), args)
    print(f"Report: {report}")
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    if args.aux_weight is not None:
        raise RunError("--aux-weight: the ablation sets the aux weight per arm (0 or 1); "
                       "use --aux-weights for the sweep")
    config = ablation_config(config_from(args, rounds=args.rounds), args.aux_weights)
    report, _ = run_and_report(config, args)
    effects = Path(args.out) / "effects.md"
    if effects.exists():
        print(effects.read_text().split("\n\n", 1)[1])
    print(f"Report: {report}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_sweep, sweep_rows, write_sweep

    variants = load_sweep(args.sweep_file)
    config = config_from(args, models=list(variants), rounds=args.rounds, variants=variants)
    report, results = run_and_report(config, args)
    table = write_sweep(args.out, sweep_rows(results, variants))
    if not config.val_pairs:
        print("digitcmp: --val-pairs 0: no validation split, so no grid point is named best")
    print(f"\nSweep ({args.out}/sweep.csv):\n\n{table}\nReport: {report}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import save_checkpoint

    if args.model not in MODELS:
        raise RunError(f"unknown model {args.model!r}; known: {', '.join(MODELS)}")
    config = config_from(args, models=[args.model], rounds=1)
    source = source_for(config)
    print(f"digitcmp: data source: {source.describe()}")
    [(model, data, result)] = train_rounds(config, args.model, [args.round])
    print(f"{args.model}: train error {100 * result['train_error']:.2f} %, "
          f"test error {100 * result['test_error']:.2f} % "
          f"({len(data.train)} train / {len(data.test)} test pairs, {result['seconds']:.0f} s)")
    if args.save:
        metrics = {k: v for k, v in result.items() if k.endswith("error")}
        save_checkpoint(args.save, model, args.model, config=config.to_dict(), source=source.info(),
                        mean=data.mean, std=data.std, metrics=metrics, round=args.round)
        print(f"saved {args.save}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import csv
    import json

    from .predict import load, load_pairs

    if bool(args.images) == bool(args.pairs) or len(args.images) not in (0, 2):
        raise DataError("give two images A B, or --pairs FILE")
    predictor = load(args.checkpoint)
    if args.images:
        a, b = args.images
        res = predictor.predict(a, b)
        if args.json:
            print(json.dumps({"a": a, "b": b, **res}))
            return 0
        if "digit_a" in res:
            print(f"{a}: {res['digit_a']} (p={res['p_digit_a']:.3f})")
            print(f"{b}: {res['digit_b']} (p={res['p_digit_b']:.3f})")
        print(f"A <= B: {'yes' if res['leq'] else 'no'} (p(A <= B)={res['p_leq']:.3f})")
        return 0
    rows = predictor.predict_pairs(load_pairs(args.pairs))
    if args.json:
        print(json.dumps(rows))
        return 0
    out = args.out or str(Path(args.pairs).with_suffix("")) + ".predictions.csv"
    fields = ["index", *rows[0].keys()] if rows else ["index"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({"index": i, **row} for i, row in enumerate(rows))
    atomic_write(out, buf.getvalue())
    print(f"wrote {len(rows)} predictions to {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    report, _ = write_report(args.run_dir)
    print(f"wrote {report} and {report.parent / 'figures'}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitcmp",
        description="Compare two MNIST digits: reproduce and extend the weight-sharing / "
                    "auxiliary-loss study.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"digitcmp {__version__}")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first, so the models it registers can be used "
                             "(repeatable)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the registered models with their parameter counts")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("reproduce", parents=[training_flags(), run_flags("runs/reproduce")],
                       help="train models over randomised rounds and print Table III")
    p.add_argument("--models", nargs="+", default=STUDY_MODELS, metavar="NAME",
                   help="models to compare (default: %(default)s)")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("ablation", parents=[training_flags(), run_flags("runs/ablation")],
                       help="the 2x2 weight sharing x auxiliary loss ablation with paired "
                            "statistics (effects.md) and an aux-weight sweep")
    p.add_argument("--aux-weights", nargs="*", type=non_negative_float, default=list(SWEEP_WEIGHTS),
                   metavar="W", help="auxiliary-loss weights swept on the shared arm; 0 and 1 are "
                                     "the arms siamese and siamese_aux (default: %(default)s)")
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("sweep", parents=[training_flags(), run_flags("runs/sweep")],
                       help="train every point of a grid of training options (a TOML file) for "
                            "N rounds; the best point is chosen on validation pairs")
    p.add_argument("sweep_file", metavar="SWEEP.toml",
                   help="[grid] table: model and training options, each a value or a list "
                        "(see examples/sweep.toml)")
    p.set_defaults(func=cmd_sweep, val_pairs=200)

    p = sub.add_parser("train", parents=[training_flags()],
                       help="train one model on one round's pairs and optionally save it")
    p.add_argument("--model", required=True, metavar="NAME", help="a name from `digitcmp models`")
    p.add_argument("--round", type=int, default=0,
                   help="which round's pairs to train and test on (default: %(default)s)")
    p.add_argument("--save", metavar="PATH", help="write a checkpoint here (e.g. model.pt)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="compare two digit images, or a file of pairs, "
                                       "with a saved model")
    p.add_argument("--checkpoint", required=True, metavar="PATH")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="two images A B (any format Pillow reads, either polarity)")
    p.add_argument("--pairs", metavar="FILE",
                   help=".npz or .pt holding an N x 2 x 14 x 14 tensor of pooled digits (0-255)")
    p.add_argument("--out", metavar="CSV",
                   help="where --pairs predictions go (default: FILE.predictions.csv)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("report", help="write figures and report.md for a run directory")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # so --plugin finds a module in the current directory
    for module in args.plugin:
        try:
            importlib.import_module(module)
        except ImportError as e:
            print(f"digitcmp: error: --plugin {module}: {e}", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except (DataError, RunError, CheckpointError) as e:
        print(f"digitcmp: error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ndigitcmp: interrupted; finished rounds are saved, rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
