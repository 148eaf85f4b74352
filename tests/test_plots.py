import pytest

from digitcmp.plots import colours, fig_error_mean_std, fig_test_error_distribution, save

ARMS = ["separate", "separate_aux", "siamese", "siamese_aux"]
VARIANTS = [f"siamese_aux@aux_weight={w}" for w in (0.1, 0.3, 3, 10)]


def groups_of(models):
    return {m: [{"train_error": 0.01 * i, "test_error": 0.1 + 0.01 * i} for i in range(3)] for m in models}


@pytest.mark.parametrize("draw", [fig_error_mean_std, fig_test_error_distribution])
@pytest.mark.parametrize("models, slanted", [(["baseline", "cnn", "siamese_aux"], False),
                                             (ARMS + VARIANTS, True)])
def test_names_slant_only_when_crowded_and_the_footnote_stays_under_them(tmp_path, draw, models, slanted):
    groups = groups_of(models)
    fig = draw(groups, colours(models), "data: a test")
    save(fig, tmp_path / "f")  # save() places the footnote; it also closes the figure
    assert (tmp_path / "f.png").exists() and (tmp_path / "f.pdf").exists() and (tmp_path / "f.svg").exists()
    labels = fig.axes[0].get_xticklabels()
    assert all((t.get_rotation() != 0) == slanted for t in labels)
    note = next(t for t in fig.texts if t.get_gid() == "footnote")
    lowest_label = min(t.get_window_extent().y0 for t in labels)
    assert note.get_window_extent().y1 < lowest_label
