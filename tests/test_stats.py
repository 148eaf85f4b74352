import math

import pytest

from digitcmp.stats import by_model, mean_std, paired, split_stats, summarise


def test_paired_statistics_against_known_values():
    # d = 1..5: mean 3, s = sqrt(2.5), t(0.975, 4) = 2.7764451 -> CI 3 -+ 1.9632432;
    # t = 4.2426, two-sided p = 0.013236; exact Wilcoxon: all 5 signs positive, p = 2 / 2^5.
    r = paired([1, 2, 3, 4, 5])
    assert r["n"] == 5 and r["mean"] == 3
    assert r["ci_low"] == pytest.approx(1.0367568, abs=1e-6)
    assert r["ci_high"] == pytest.approx(4.9632432, abs=1e-6)
    assert r["t_p"] == pytest.approx(0.0132356, abs=1e-6)
    assert r["wilcoxon_p"] == pytest.approx(0.0625)
    # Signs matter, not only magnitudes: one negative of rank 1 -> W+ = 14 of 15, p = 4 / 32.
    assert paired([-1, 2, 3, 4, 5])["wilcoxon_p"] == pytest.approx(0.125)
    # Undefined cases give NaN, not an exception.
    assert math.isnan(paired([0, 0, 0])["wilcoxon_p"]) and math.isnan(paired([0.1])["ci_low"])


def test_means_stds_and_summaries():
    assert mean_std([1, 2, 3]) == (2.0, 1.0) and math.isnan(mean_std([4])[1])
    records = [{"model": "b", "round": 1, "train_error": 0.1, "test_error": 0.3, "params": 5},
               {"model": "a", "round": 0, "train_error": 0.2, "test_error": 0.5, "params": 7},
               {"model": "b", "round": 0, "train_error": 0.3, "test_error": 0.1, "params": 5}]
    assert [r["round"] for r in by_model(records)["b"]] == [0, 1]
    assert list(by_model(records, ["b", "a"])) == ["b", "a"]
    s = split_stats(by_model(records)["b"], ("test", "val"))
    assert s["test_error_mean"] == pytest.approx(0.2) and math.isnan(s["val_error_mean"])
    [a, b] = summarise(records)
    assert (a["model"], a["rounds"], a["params"]) == ("a", 1, 7)
    assert b["train_error_mean"] == pytest.approx(0.2)
