import io

from digitcmp.progress import Progress


def test_each_finished_round_is_one_line_and_no_bar_off_a_terminal(monkeypatch, capsys):
    said = []
    p = Progress({"a": 2}, {"a": 5}, lambda arm: 1e6, 0, 2, bar=True, say=said.append)
    p.epochs_done("a", 5)
    p.round_done({"model": "a", "round": 0, "test_error": 0.125, "seconds": 10.0})
    p.close()
    assert said == ["digitcmp: a round 0: test error 12.50 %, 10 s (1/2 rounds)"]
    assert "\r" not in capsys.readouterr().err  # pytest's stderr is no terminal: the bar is off


def test_the_eta_weighs_each_model_by_its_measured_cost(monkeypatch):
    tty = io.StringIO()
    tty.isatty = lambda: True
    monkeypatch.setattr("sys.stderr", tty)
    flops = {"cheap": 1e6, "costly": 1e8}
    p = Progress({"cheap": 1, "costly": 1}, {"cheap": 10, "costly": 10}, flops.get, 0, 2)
    # Before any measurement, costs follow the models' floating-point work.
    assert p.weight("costly") == 100 * p.weight("cheap")
    p.epochs_done("cheap", 10)
    p.round_done({"model": "cheap", "round": 0, "test_error": 0.1, "seconds": 20.0})
    assert p.weight("cheap") == 2.0  # seconds per round-epoch, measured
    assert p.weight("costly") == 200.0  # scaled by the measured model's seconds per FLOP
    assert p.bar.total == 20.0 + 10 * 200.0 and p.bar.n == 20.0
    p.close()
