"""What each ``digitcmp`` subcommand does, given its parsed arguments (``cli.py`` parses them).

Results go to stdout (``digitcmp reproduce > table.md`` captures Table III alone); what the
run is doing (data source, resumes, progress, where files went) goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from .config import Config
from .errors import ConfigError, OutputError
from .files import atomic_write, check_output_file
from .messages import say
from .models import MODELS, count_params


def config_from(args: argparse.Namespace, **extra) -> Config:
    """The Config the flags of ``args`` ask for (each flag's name is its Config field's);
    ``extra`` fields override."""
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if hasattr(args, f.name)}
    return Config(**{**options, "plugins": list(args.plugin), **extra})


def cmd_models(args: argparse.Namespace) -> int:
    if args.layers:
        from .models.layers import layer_table

        if args.layers not in MODELS:
            raise ConfigError(f"--layers {args.layers}: unknown model; known: {', '.join(MODELS)}")
        print(layer_table(MODELS[args.layers]()))
        return 0
    width = max(len(n) for n in MODELS)
    for name, cls in MODELS.items():
        print(f"{name:<{width}}  {count_params(cls()):>9,}  {cls.description}")
    return 0


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s} s" if minutes else f"{s} s"


def run_and_report(config: Config, args: argparse.Namespace) -> tuple[list[dict], str, str]:
    """Run config's missing rounds into args.out, then write its tables, figures and report.
    Returns every round's result, Table III and the run's last line (to say after the results)."""
    from .experiment import run_experiment
    from .report import import_drawing, write_report

    start = time.perf_counter()
    results = run_experiment(config, args.out, executor=args.executor, workers=args.workers,
                             progress=not args.no_progress, command=sys.argv, say=say,
                             save_checkpoints=args.save_checkpoints, rounds_per_task=args.stack,
                             ray_address=args.ray_address, when_idle=import_drawing)
    report, table = write_report(args.out, say=say)
    # The run may hold other models' rounds, or more rounds, from earlier commands.
    asked = {(m, r) for m in config.models for r in range(config.rounds)}
    finished = sum((r["model"], r["round"]) in asked for r in results)
    others = f" ({len(results)} in the run)" if len(results) > finished else ""
    done = (f"digitcmp: done in {_duration(time.perf_counter() - start)}: {finished} of {len(asked)} "
            f"rounds{others}; report {report}, figures in {report.parent / 'figures'}/")
    return results, table, done


def cmd_reproduce(args: argparse.Namespace) -> int:
    _, table, done = run_and_report(config_from(args), args)
    print(f"Table III ({args.out}):\n\n{table}", flush=True)
    say(done)
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from .ablation import ablation_config

    if not args.aux_weights:
        raise ConfigError("--aux-weights: give at least one weight (0 and 1 are the arms "
                          "siamese and siamese_aux)")
    config = ablation_config(config_from(args), args.aux_weights)
    _, table, done = run_and_report(config, args)
    print(f"Table III ({args.out}):\n\n{table}")
    effects = Path(args.out) / "effects.md"
    if effects.exists():
        print(effects.read_text().split("\n\n", 1)[1], flush=True)
    say(done)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_sweep, sweep_rows, write_sweep

    variants = load_sweep(args.sweep_file)
    config = config_from(args, models=list(variants), variants=variants)
    results, _, done = run_and_report(config, args)
    table = write_sweep(args.out, sweep_rows(results, variants))
    if not config.val_pairs:
        say("digitcmp: --val-pairs 0: no validation split, so no grid point is named best")
    print(f"Sweep ({args.out}/sweep.csv):\n\n{table}", flush=True)
    say(done)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import save_trained
    from .data.sources import describe
    from .experiment import prepare
    from .progress import Progress
    from .train import source_for, train_rounds

    if args.save:
        check_output_file(args.save, "--save")
        if Path(args.save).exists() and not args.force:
            raise OutputError(f"--save {args.save}: exists; add --force to replace it")
    config = config_from(args, models=[args.model], rounds=args.round + 1)
    say(f"digitcmp: data: {describe(prepare(config)['source'])}")
    bar = Progress({args.model: 1}, {args.model: config.epochs}, lambda arm: 0.0, 0, 1,
                   bar=not args.no_progress, say=say)
    try:
        [trained] = train_rounds(config, args.model, [args.round], lambda k: bar.epochs_done(args.model, k))
    finally:
        bar.close()
    r, data = trained.record, trained.data
    print(f"{args.model}: train error {100 * r['train_error']:.2f} %, test error "
          f"{100 * r['test_error']:.2f} % ({len(data.train)} train / {len(data.test)} test pairs, "
          f"{r['seconds']:.0f} s)")
    if args.save:
        save_trained(args.save, trained, config.to_dict(), source_for(config).info())
        say(f"digitcmp: saved {args.save}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .device import resolve_device
    from .predict import load, load_pairs

    if bool(args.images) == bool(args.pairs_file) or len(args.images) not in (0, 2):
        raise ConfigError("give two images A B, or --pairs-file FILE")
    out = None
    if args.pairs_file and not args.json:
        out = Path(args.out or str(Path(args.pairs_file).with_suffix("")) + ".predictions.csv")
        check_output_file(out, "--out")
        if out.resolve() == Path(args.pairs_file).resolve():
            raise OutputError(f"--out {out}: is the input file; give another name")
        if out.exists() and not args.force:
            raise OutputError(f"--out {out}: exists; add --force to replace it")
    predictor = load(args.checkpoint, resolve_device(args.device))
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
    rows = predictor.predict_pairs(load_pairs(args.pairs_file))
    if args.json:
        print(json.dumps(rows))
        return 0
    from .tables import csv_text

    atomic_write(out, csv_text([{"index": i, **row} for i, row in enumerate(rows)],
                               ["index", *(rows[0] if rows else [])]))
    say(f"digitcmp: wrote {len(rows)} predictions to {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    report, _ = write_report(args.run_dir, say=say)
    say(f"digitcmp: wrote {report} and {report.parent / 'figures'}/")
    return 0
