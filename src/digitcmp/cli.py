"""The ``digitcmp`` command line: its flags, and the one place errors become messages.

A user error (any ``DigitcmpError``, a bad flag) is one line on stderr and exit status 2; an
interrupt says how to resume (130); anything else is a bug, reported in one line too, with
``--debug`` (or DIGITCMP_DEBUG=1) to see its traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from .config import (
    ABLATION_AUX_WEIGHTS,
    DEVICES,
    ENGINES,
    PRECISIONS,
    SOURCES,
    STUDY_MODELS,
    TEST_POOLS,
    Config,
)
from .errors import DigitcmpError
from .executors import EXECUTORS
from .version import __version__


class Parser(argparse.ArgumentParser):
    """argparse, with errors in one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def whole(low: int, high: int | None = None):
    """An argparse type: a whole number from ``low`` (to ``high``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a number from {low}"
                                             + (f" to {high:,}" if high else " up") + f", got {value}")
        return value

    return parse


def non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):  # also rejects nan and inf
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def plugin_flag(p: argparse.ArgumentParser, dest: str) -> None:
    p.add_argument("--plugin", action="append", default=[], dest=dest, metavar="MODULE",
                   help="import MODULE (a module name, or a path to a .py file) first, so the "
                        "models it registers can be used; repeatable")


def training_flags(aux_weight: bool = True) -> argparse.ArgumentParser:
    """Flags shared by every command that trains; their defaults are Config's."""
    d = Config()
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("data and training")
    g.add_argument("--data", choices=SOURCES, default=d.data,
                   help="where digits come from: full MNIST (local or downloaded), the MNIST "
                        "digits shipped with digitcmp (embedded), or auto: MNIST if present or "
                        "downloadable, else embedded (default: %(default)s)")
    g.add_argument("--data-dir", default=d.data_dir, metavar="DIR",
                   help="directory holding the four MNIST IDX files (default: the cache dir, "
                        "$DIGITCMP_CACHE/mnist or the platform's user cache)")
    g.add_argument("--test-dir", default=d.test_dir, metavar="DIR",
                   help="draw test pairs from the MNIST test split (the two t10k IDX files) in "
                        "DIR instead of the source's own test digits")
    g.add_argument("--test-pool", choices=TEST_POOLS, default=d.test_pool,
                   help="test pairs from the source's test digits, or from the other half of "
                        "its training digits split at random each round (digitcmp 0.1's "
                        "embedded protocol) (default: %(default)s)")
    g.add_argument("--pairs", type=whole(2), default=d.pairs, metavar="N",
                   help="training pairs and test pairs per round (default: %(default)s)")
    g.add_argument("--val-pairs", type=whole(0), default=d.val_pairs, metavar="N",
                   help="hold N of the training pairs out as a validation split: records get "
                        "val_error, the split to choose options on, never the test pairs "
                        "(default: %(default)s)")
    g.add_argument("--epochs", type=whole(1, 100_000), default=d.epochs, metavar="N",
                   help="passes over the training pairs (default: %(default)s)")
    g.add_argument("--batch-size", type=whole(2), default=d.batch_size, metavar="N",
                   help="pairs per Adam step; at least 2, as BatchNorm needs (default: %(default)s)")
    g.add_argument("--curve-pairs", type=whole(0), default=d.curve_pairs, metavar="N",
                   help="test (and validation) pairs evaluated after every epoch for the learning "
                        "curves; 0: none (default: %(default)s)")
    g.add_argument("--no-standardise", dest="standardise", action="store_false",
                   help="feed pixels as they are (0-255) instead of standardised with the "
                        "training pairs' mean and std")
    g.add_argument("--lr", type=non_negative, default=d.lr,
                   help="Adam learning rate (default: each model's own: 5e-4 for baseline and "
                        "cnn, 1e-3 for siamese_aux, as in the study)")
    g.add_argument("--weight-decay", type=non_negative, default=d.weight_decay, metavar="WD",
                   help="Adam's L2 penalty, the study's 'L2 regularisation' (default: %(default)s)")
    if aux_weight:
        g.add_argument("--aux-weight", type=non_negative, default=d.aux_weight, metavar="W",
                       help="weight of the auxiliary digit loss, for models with a digit head "
                            "(default: each model's own: 1 for siamese_aux)")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="seed of every random draw; a round's draws depend only on it and the "
                        "round (default: %(default)s)")
    g.add_argument("--threads", type=whole(1, 256), default=d.threads, metavar="N",
                   help="torch threads per training (default: %(default)s)")
    g.add_argument("--engine", choices=ENGINES, default=d.engine,
                   help="stacked: train a model's rounds as one network, each with its own "
                        "data, init, dropout, BatchNorm and Adam state (fast); reference: one "
                        "plain training loop per round (default: %(default)s)")
    g.add_argument("--device", choices=DEVICES, default=d.device,
                   help="where to train: auto picks CUDA if available, else MPS, else the CPU "
                        "(default: %(default)s)")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="float32 (comparable across devices), TF32 matmuls on CUDA, or "
                        "bfloat16 autocast (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is off anyway when stderr is not a terminal)")
    return p


def run_flags(out: str) -> argparse.ArgumentParser:
    """Flags shared by the commands that run rounds into a run directory."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("rounds and execution")
    g.add_argument("--rounds", type=whole(1, 10_000), default=15, metavar="N",
                   help="randomised rounds per model, each with its own pairs (default: %(default)s)")
    g.add_argument("--out", default=out, metavar="DIR",
                   help="run directory; rerunning into it resumes, more --rounds or --models "
                        "extend it (default: %(default)s)")
    g.add_argument("--executor", choices=EXECUTORS, default="process",
                   help="run tasks one after another, in parallel local processes, or on Ray "
                        "(pip install 'digitcmp[ray]') (default: %(default)s)")
    g.add_argument("--workers", type=whole(1, 4096), default=None, metavar="N",
                   help="parallel trainings for --executor process or a local Ray (default: "
                        "one per GPU, else cores / threads)")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join for --executor ray (default: $RAY_ADDRESS, else "
                        "start a local Ray)")
    g.add_argument("--stack", type=whole(1, 10_000), default=None, metavar="R",
                   help="rounds the stacked engine trains together; does not change results "
                        "(default: on a CPU, as many as keep a step's activations within 8 MiB, "
                        "20 MiB with --threads 1; "
                        "on a GPU, all)")
    g.add_argument("--save-checkpoints", action="store_true",
                   help="save every round's trained model in OUT/checkpoints/")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="digitcmp", allow_abbrev=False,
                    description="Compare two MNIST digits: reproduce and extend the weight-sharing "
                                "/ auxiliary-loss study (EE-559 mini-project 1).")
    parser.add_argument("--version", action="version", version=f"digitcmp {__version__}")
    plugin_flag(parser, "plugin")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also: DIGITCMP_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    # Each subcommand names its function in commands.py, imported only once the flags are
    # parsed: commands imports torch (seconds), which --help and a mistyped flag do not need.
    def command(name: str, func: str, summary: str, description: str, parents=()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=list(parents), help=summary, description=description,
                           allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        plugin_flag(p, "plugin_after")
        p.set_defaults(func=func)
        return p

    p = command("models", "cmd_models", "list the registered models",
                "List every registered model with its parameter count and a one-line "
                "description, or print one model's layers (the study's Tables I and II).")
    p.add_argument("--layers", metavar="NAME", help="print NAME's layers, output shapes and parameters")

    p = command("reproduce", "cmd_reproduce", "train models over randomised rounds; print Table III",
                "Train each model for --rounds rounds, each on its own randomly drawn pairs, and "
                "print the study's Table III beside ours. Writes the run directory (--out): "
                "config.json, rounds.jsonl, summary.csv/.md, epochs.csv, report.md and figures/.",
                [training_flags(), run_flags("runs/reproduce")])
    p.add_argument("--models", nargs="+", default=list(STUDY_MODELS), metavar="NAME",
                   help="models to compare (default: " + " ".join(STUDY_MODELS) + ")")

    p = command("ablation", "cmd_ablation",
                "the 2x2 weight sharing x auxiliary loss ablation, with an aux-weight sweep",
                "Train the four arms of the 2 x 2 design (separate, separate_aux, siamese, "
                "siamese_aux) on the same pairs round by round, and the shared arm at each "
                "--aux-weights; write the paired effects (effects.md, effects.csv).",
                [training_flags(aux_weight=False), run_flags("runs/ablation")])
    p.add_argument("--aux-weights", nargs="+", type=non_negative, default=list(ABLATION_AUX_WEIGHTS),
                   metavar="W", help="auxiliary-loss weights swept on the shared arm; 0 and 1 are "
                                     "the arms siamese and siamese_aux (default: "
                                     + " ".join(f"{w:g}" for w in ABLATION_AUX_WEIGHTS) + ")")

    p = command("sweep", "cmd_sweep", "train every point of a grid of training options",
                "Train every point of a grid of training options (a TOML file, see "
                "examples/sweep.toml) for --rounds rounds; the best point is chosen on the "
                "validation pairs (--val-pairs), never on test pairs.",
                [training_flags(), run_flags("runs/sweep")])
    p.add_argument("sweep_file", metavar="SWEEP.toml",
                   help="a [grid] table: model and training options, each a value or a list")
    p.set_defaults(val_pairs=200)

    p = command("train", "cmd_train", "train one model on one round's pairs; save it",
                "Train one model on one round's training pairs, print its train and test error, "
                "and optionally save it as a checkpoint for `digitcmp predict`.",
                [training_flags()])
    p.add_argument("--model", required=True, metavar="NAME", help="a name from `digitcmp models`")
    p.add_argument("--round", type=whole(0, 9_999), default=0,
                   help="which round's pairs to train and test on (default: %(default)s)")
    p.add_argument("--save", metavar="PATH", help="write the trained model here (e.g. model.pt)")
    p.add_argument("--force", action="store_true", help="replace an existing --save file")

    p = command("predict", "cmd_predict", "compare two digit images, or a file of pairs",
                "Compare two digit images (any format Pillow reads, either polarity), or every "
                "pair of an N x 2 x 14 x 14 tensor file, with a saved model.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a model saved by `digitcmp train --save`")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="two images A B")
    p.add_argument("--pairs-file", metavar="FILE",
                   help=".npz or .pt holding an N x 2 x 14 x 14 tensor of pooled digits (0-255)")
    p.add_argument("--out", metavar="CSV",
                   help="where --pairs-file predictions go (default: FILE.predictions.csv)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where the model runs (default: %(default)s)")

    p = command("report", "cmd_report", "(re)write the tables, figures and report.md of a run",
                "Write summary tables, epochs.csv, figures (PNG, SVG, PDF) and report.md for a "
                "run directory, also for a run still in progress or stopped early.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.plugin = args.plugin + args.plugin_after
    debug = args.debug or os.environ.get("DIGITCMP_DEBUG") == "1"
    try:
        from . import commands
        from .plugins import resolve_plugin

        args.plugin = [resolve_plugin(p) for p in args.plugin]
        return getattr(commands, args.func)(args)
    except DigitcmpError as e:
        if debug:
            raise
        print(f"digitcmp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndigitcmp: interrupted; finished rounds are saved, rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, and the way to see more
        if debug:
            raise
        where = str(e).splitlines()[0][:300] if str(e) else ""
        print(f"digitcmp: internal error: {type(e).__name__}: {where} (rerun with --debug for "
              "the traceback, and please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
