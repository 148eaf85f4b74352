import subprocess
import sys

import pytest

from digitcmp.cli import main


def test_reproduce_prints_the_table_on_stdout_and_the_rest_on_stderr(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "--models", "baseline", "siamese_aux", "--rounds", "1", "--epochs",
                 "1", "--pairs", "50", "--data", "embedded", "--executor", "serial",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("Table III") and "| Nb of parameters | 73,954 | 69,849 |" in captured.out
    assert "digitcmp:" not in captured.out  # diagnostics stay off stdout
    err = captured.err.splitlines()
    assert err[0].startswith("digitcmp: data: embedded")
    assert any(line.startswith("digitcmp: siamese_aux round 0: test error") for line in err)
    assert err[-1].startswith("digitcmp: done in") and "2 of 2 rounds" in err[-1] and "report.md" in err[-1]
    assert "\r" not in captured.err  # no progress-bar frames when stderr is not a terminal
    assert (out / "summary.csv").read_text().startswith("model,params,rounds,")
    # One of the run's models again: nothing to train, and the last line counts what was asked.
    assert main(["reproduce", "--models", "baseline", "--rounds", "1", "--epochs", "1", "--pairs", "50",
                 "--data", "embedded", "--executor", "serial", "--out", str(out)]) == 0
    assert "1 of 1 rounds (2 in the run);" in capsys.readouterr().err.splitlines()[-1]


def test_models_lists_counts_and_layers(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "73,954" in out and "77,530" in out and "69,849" in out
    assert main(["models", "--layers", "siamese_aux"]) == 0
    assert "Linear (compare)" in capsys.readouterr().out


def test_plugin_is_accepted_before_and_after_the_subcommand(tmp_path, monkeypatch, capsys):
    (tmp_path / "plug_cli.py").write_text(
        "from digitcmp.models import register\nfrom digitcmp.models.study import Baseline\n"
        "@register('plug_cli_model')\nclass M(Baseline):\n    description = 'from a plugin'\n")
    monkeypatch.chdir(tmp_path)
    assert main(["models", "--plugin", "plug_cli"]) == 0
    assert "plug_cli_model" in capsys.readouterr().out
    assert main(["--plugin", "plug_cli", "models"]) == 0


def test_every_subcommand_has_a_description_and_every_option_help(capsys):
    from digitcmp.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.description, name
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and "%(default)s" != action.help.strip(), (name, action.dest)
    text = sub.choices["reproduce"].format_help()
    assert "default: baseline cnn siamese_aux" in text


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "--models", "nope"], "unknown model(s) nope"),
    (["reproduce", "--data", "mnist", "--data-dir", "{tmp}/absent"],
     "--data-dir {tmp}/absent: no such directory"),
    (["reproduce", "--epochs", "0"], "argument --epochs: expected a number from 1"),
    (["reproduce", "--batch-size", "1"], "argument --batch-size: expected a number from 2"),
    (["reproduce", "--lr", "inf"], "argument --lr: expected a finite number >= 0, got inf"),
    (["--plugin", "no_such_module_xyz", "models"], "--plugin no_such_module_xyz: no module"),
    (["ablation", "--aux-weights"], "argument --aux-weights: expected at least one argument"),
    (["predict", "--checkpoint", "x.pt", "--pairs", "3"], "unrecognized arguments: --pairs"),
    (["report", "{tmp}/absent"], "no such run directory"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, no_network, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + (
        ["--out", str(tmp_path / "o")] if argv[0] == "reproduce" else [])
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message.replace("{tmp}", str(tmp_path)) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch, capsys):
    from digitcmp import commands

    def boom(args):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(commands, "cmd_models", boom)
    assert main(["models"]) == 3
    assert "internal error: ZeroDivisionError: bug (rerun with --debug" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "models"])


@pytest.mark.parametrize("argv", [["--help"], ["reproduce", "--help"], ["reproduce", "--epochs", "x"]])
def test_help_and_flag_errors_do_not_import_torch(argv):
    # In a fresh interpreter: this one imported torch long ago.
    code = ("import sys\nfrom digitcmp.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
