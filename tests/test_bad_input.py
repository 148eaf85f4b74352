"""Bad input and misuse, table-driven: each case is one line on stderr naming the problem, a
non-zero exit, no traceback, and nothing written or lost. Cases are grouped by the points of
the hardening issue (1-11); points tested where their mechanism lives are named there."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_idx
from digitcmp.cli import main

# What a quick run needs on top of a command: a tiny protocol on the shipped digits.
QUICK = ["--data", "embedded", "--pairs", "40", "--epochs", "1", "--rounds", "1", "--executor", "serial"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code: int, err: str, message: str) -> None:
    """Exit 2, and the error in one line (after whatever the run had said it was doing)."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert message in lines[-1] and "error:" in lines[-1], err
    assert all(line.startswith("digitcmp") for line in lines), err  # no traceback
    assert sum("error" in line for line in lines) == 1, err


# Each case: a setup that prepares files in tmp (returns nothing), the argv (``{tmp}`` is
# replaced), the message, and what must not exist afterwards.
def _foreign(tmp):
    (tmp / "mine").mkdir()
    (tmp / "mine" / "report.md").write_text("my own notes")


def _bomb(tmp):
    (tmp / "bomb").mkdir()
    header = b"\x00\x00\x08\x03\x00\x00\x00\x01\x00\x00\x00\x1c\x00\x00\x00\x1c"
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp / "bomb" / f"{stem}.gz").write_bytes(gzip.compress(header + bytes(20 * 2**20)))


def _idx_dir(tmp):
    (tmp / "mn").mkdir()
    x, y = np.zeros((4, 28, 28), np.uint8), np.arange(4, dtype=np.uint8)
    for split in ("train", "t10k"):
        write_idx(tmp / "mn" / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(tmp / "mn" / f"{split}-labels-idx1-ubyte.gz", y)
    (tmp / "mn" / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp / "mn" / "t10k-labels-idx1-ubyte.gz").mkdir()


def _run_dir(tmp, config, lines):
    (tmp / "run").mkdir()
    (tmp / "run" / "config.json").write_text(config)
    (tmp / "run" / "rounds.jsonl").write_text(lines)


def _good_run(tmp, lines):
    _run_dir(tmp, json.dumps({"config": {"models": ["baseline"], "rounds": 2}}), lines)


def _sweep(tmp, text):
    (tmp / "s.toml").write_text(text)


def _image(tmp, size):
    Image.new("1", size).save(tmp / "big.png")


def _file(tmp, name, data=b""):
    (tmp / name).write_bytes(data)


GOOD_LINE = json.dumps({"model": "baseline", "round": 0, "train_error": 0.1, "test_error": 0.2})
CASES = [
    # 3. Every check that can fail runs before anything is written.
    ("3 pairs beyond the pool", None, ["reproduce", *QUICK, "--pairs", "2501", "--out", "{tmp}/o"],
     "--pairs 2501: 2501 train pairs need 5,002 digits", "o"),
    ("3 sweep's validation split beyond --pairs", lambda t: _sweep(t, "[grid]\nmodel = 'cnn'\n"),
     ["sweep", "{tmp}/s.toml", *QUICK, "--pairs", "100", "--out", "{tmp}/o"],
     "--val-pairs 200: must be >= 0 and leave at least 2 of the 100 pairs", "o"),
    ("3 unknown model", None, ["reproduce", *QUICK, "--models", "nope", "--out", "{tmp}/o"],
     "unknown model(s) nope", "o"),
    # 4. Options must be finite.
    ("4 infinite lr", None, ["reproduce", *QUICK, "--lr", "inf", "--out", "{tmp}/o"],
     "argument --lr: expected a finite number >= 0, got inf", "o"),
    ("4 nan weight decay", None, ["train", "--model", "cnn", "--weight-decay", "nan"],
     "argument --weight-decay: expected a finite number >= 0, got nan", None),
    ("4 diverging training", None, ["train", "--model", "cnn", *QUICK[:6], "--lr", "1e38", "--save",
                                    "{tmp}/diverged.pt"], "cnn round 0: ", "diverged.pt"),
    # 5. Nothing the user did not ask to overwrite is overwritten.
    ("5 a directory that is not a run", _foreign, ["reproduce", *QUICK, "--out", "{tmp}/mine"],
     "not a digitcmp run directory (no config.json, holds 'report.md')", None),
    ("5 --out is a file", lambda t: _file(t, "f"), ["reproduce", *QUICK, "--out", "{tmp}/f"],
     "exists and is not a directory", None),
    # 6. Bounded resources.
    ("6 gzip bomb", _bomb, ["reproduce", *QUICK, "--data", "mnist", "--data-dir", "{tmp}/bomb", "--out",
                            "{tmp}/o"], "trailing bytes", "o"),
    ("6 a billion rounds", None, ["reproduce", "--rounds", "1000000000"],
     "argument --rounds: expected a number from 1 to 10,000", None),
    ("6 a hundred thousand threads", None, ["reproduce", "--threads", "100000"],
     "argument --threads: expected a number from 1 to 256", None),
    ("6 a 10,000-point sweep",
     lambda t: _sweep(t, f"[grid]\nmodel = 'cnn'\nlr = {list(range(100))}\nepochs = {list(range(1, 101))}\n"),
     ["sweep", "{tmp}/s.toml", "--out", "{tmp}/o"],
     "[grid] has 10,000 points; at most 1,000", "o"),
    ("6 an image of 5000 x 5000 pixels", lambda t: _image(t, (5000, 5000)),
     ["predict", "--checkpoint", "{ckpt}", "{tmp}/big.png", "{tmp}/big.png"],
     "image of 5000 x 5000 pixels; digitcmp reads images of up to", None),
    # 7. Outputs are checked before the work.
    ("7 --save in a missing directory", None, ["train", "--model", "cnn", "--save", "{tmp}/no/m.pt"],
     "--save {tmp}/no/m.pt: directory {tmp}/no does not exist", None),
    ("7 --save is a directory", None, ["train", "--model", "cnn", "--save", "{tmp}/"],
     "is a directory", None),
    # 8. Small batches.
    ("8 batch of one", None, ["reproduce", "--batch-size", "1"],
     "argument --batch-size: expected a number from 2", None),
    ("8 one pair", None, ["train", "--model", "cnn", "--pairs", "1"],
     "argument --pairs: expected a number from 2", None),
    ("8 validation split of every pair", None, ["train", "--model", "cnn", *QUICK[:6], "--val-pairs", "39"],
     "--val-pairs 39: must be >= 0 and leave at least 2 of the 40 pairs", None),
    # 10. No traceback for any input.
    ("10 empty checkpoint", lambda t: _file(t, "e.pt"),
     ["predict", "--checkpoint", "{tmp}/e.pt", "a", "b"], "e.pt: not a readable checkpoint", None),
    ("10 config.json is a list", lambda t: _run_dir(t, "[]", GOOD_LINE + "\n"), ["report", "{tmp}/run"],
     "config.json: not a digitcmp manifest", None),
    ("10 config.json is a string", lambda t: _run_dir(t, '"hello"', GOOD_LINE + "\n"),
     ["report", "{tmp}/run"], "config.json: not a digitcmp manifest", None),
    ("10 config is null", lambda t: _run_dir(t, '{"config": null}', ""), ["report", "{tmp}/run"],
     "config.json: not a digitcmp manifest", None),
    ("10 a result line of the wrong types", lambda t: _good_run(t, '{"model": 1, "round": "x"}\n' + GOOD_LINE
                                                                 + "\n"),
     ["report", "{tmp}/run"], "rounds.jsonl:1: malformed result line", None),
    ("10 a plugin that raises", lambda t: _file(t, "boom.py", b"raise RuntimeError('boom')\n"),
     ["--plugin", "{tmp}/boom.py", "models"], "importing it failed: RuntimeError: boom", None),
    ("10 a plugin with a syntax error", lambda t: _file(t, "bad.py", b"def f(:\n"),
     ["models", "--plugin", "{tmp}/bad.py"], "syntax error in", None),
    ("10 a sweep whose model list nests a list", lambda t: _sweep(t, "[grid]\nmodel = [['cnn']]\n"),
     ["sweep", "{tmp}/s.toml", "--out", "{tmp}/o"], "[grid] 'model' must be one of", "o"),
    ("10 a sweep path that is a directory", None, ["sweep", "{tmp}", "--out", "{tmp}/o"],
     "is a directory, not a sweep file", "o"),
    # 11. Honest reading.
    ("11 a missing --data-dir is not created", None,
     ["reproduce", *QUICK, "--data", "mnist", "--data-dir", "{tmp}/absent", "--out", "{tmp}/o"],
     "--data-dir {tmp}/absent: no such directory", "absent"),
    ("11 a directory where an IDX file should be", _idx_dir,
     ["reproduce", *QUICK, "--data", "mnist", "--data-dir", "{tmp}/mn", "--out", "{tmp}/o"],
     "t10k-labels-idx1-ubyte.gz: not a regular file", "o"),
]


@pytest.mark.parametrize("name, setup, argv, message, absent", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, capsys, checkpoint, no_network, name, setup, argv, message, absent):
    if setup:
        setup(tmp_path)
    fill = {"{tmp}": str(tmp_path), "{ckpt}": str(checkpoint)}

    def subst(text: str) -> str:
        for k, v in fill.items():
            text = text.replace(k, v)
        return text

    def files():  # what digitcmp may have written (Python caches an imported plugin's bytecode)
        return sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__")

    before = files()
    code, out, err = run_cli([subst(a) for a in argv], capsys)
    assert_one_line(code, err, subst(message))
    if absent:
        assert not (tmp_path / absent).exists(), f"{absent} was created"
    assert files() == before  # nothing written, nothing lost


def test_duplicate_results_are_counted_once_and_said(tmp_path, capsys):
    _good_run(tmp_path, GOOD_LINE + "\n" + GOOD_LINE + "\n")
    code, out, err = run_cli(["report", str(tmp_path / "run")], capsys)
    assert code == 0 and "baseline round 0 appears twice; the first is used" in err
    assert "| Rounds | 1 |" in (tmp_path / "run" / "summary.md").read_text()


def test_a_refused_run_leaves_the_directory_as_it_was_and_the_fix_runs(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert run_cli(["reproduce", *QUICK, "--models", "baseline", "--out", out], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in Path(out).iterdir() if p.is_file()}
    code, _, err = run_cli(["reproduce", *QUICK, "--models", "baseline", "--pairs", "2501", "--out", out],
                           capsys)
    assert code == 2 and {p.name: p.read_bytes() for p in Path(out).iterdir() if p.is_file()} == before
    assert run_cli(["reproduce", *QUICK, "--models", "baseline", "cnn", "--out", out], capsys)[0] == 0


@pytest.mark.parametrize("shadow, argv, message", [
    ("tomllib.py", ["sweep", "absent.toml"], "absent.toml: no such sweep file"),
    ("PIL/__init__.py", ["predict", "--checkpoint", "absent.pt", "a.png", "b.png"],
     "absent.pt: no such checkpoint"),
])
def test_no_code_runs_from_the_working_directory(tmp_path, shadow, argv, message):
    """1. A module in the working directory never shadows a library digitcmp imports."""
    path = tmp_path / shadow
    path.parent.mkdir(exist_ok=True)
    path.write_text("raise SystemExit('shadowed: code from the working directory ran')\n")
    for command in ([sys.executable, "-m", "digitcmp"], [str(Path(sys.executable).with_name("digitcmp"))]):
        if not Path(command[0]).exists():
            continue
        proc = subprocess.run(command + argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": ""})
        assert "shadowed" not in proc.stderr and message in proc.stderr, proc.stderr
        assert proc.returncode == 2
