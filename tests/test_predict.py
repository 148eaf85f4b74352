import json

import numpy as np
import pytest
import torch
from PIL import Image

import digitcmp
from digitcmp.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from digitcmp.cli import main
from digitcmp.data import DataError
from digitcmp.predict import load_pairs, mnist_like
from digitcmp.train import Config, cached_source, train_round

TINY = ["--data", "embedded", "--pairs", "100", "--epochs", "1"]


@pytest.fixture(scope="module")
def trained():
    return train_round(Config(data="embedded", pairs=100, epochs=1), "siamese_aux", 0)


@pytest.fixture
def ckpt(tmp_path, trained):
    model, data, result = trained
    return save_checkpoint(tmp_path / "m.pt", model, "siamese_aux", config={"epochs": 1},
                           source={"name": "embedded"}, mean=data.mean, std=data.std,
                           metrics={"test_error": result["test_error"]}, round=0)


def raw_digit(i: int = 0) -> np.ndarray:
    """A real 28x28 MNIST digit (from the embedded sample) as uint8."""
    from digitcmp.data import embedded_csv

    row = np.loadtxt(embedded_csv(), delimiter=",", max_rows=i + 1, ndmin=2)[i]
    return row[:784].reshape(28, 28).astype(np.uint8)


def test_checkpoint_round_trip_gives_identical_predictions(ckpt, trained):
    model, data, _ = trained
    loaded, meta = load_checkpoint(ckpt)
    model.eval()
    with torch.inference_mode():
        for a, b in zip(model(data.test.input), loaded(data.test.input), strict=True):
            assert torch.equal(a, b)
    assert meta["normalisation"] == {"mean": data.mean, "std": data.std}
    assert meta["versions"]["torch"] == torch.__version__


def test_preprocessing_recovers_an_mnist_digit():
    digit = raw_digit(3)
    scan = np.full((150, 130), 255, dtype=np.uint8)  # dark ink on white, 4x, off-centre
    big = np.asarray(Image.fromarray(255 - digit).resize((112, 112), Image.BICUBIC))
    scan[20:132, 5:117] = big
    back = mnist_like(scan).astype(float)
    corr = np.corrcoef(back.ravel(), digit.astype(float).ravel())[0, 1]
    assert back.shape == (28, 28) and corr > 0.9


def test_predict_images_and_pairs_from_the_cli(tmp_path, ckpt, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(255 - raw_digit(0)).resize((80, 80)).save(a)
    Image.fromarray(raw_digit(1)).save(b)
    assert main(["predict", "--checkpoint", str(ckpt), str(a), str(b), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 <= res["p_leq"] <= 1 and res["digit_a"] in range(10) and 0 <= res["p_digit_b"] <= 1
    predictor = digitcmp.load(ckpt)
    assert predictor.predict(a, b) == {k: v for k, v in res.items() if k not in ("a", "b")}

    src = cached_source("embedded", None)
    np.savez(tmp_path / "pairs.npz", input=src.train_x[:10].view(5, 2, 14, 14).numpy())
    assert main(["predict", "--checkpoint", str(ckpt), "--pairs", str(tmp_path / "pairs.npz")]) == 0
    lines = (tmp_path / "pairs.predictions.csv").read_text().splitlines()
    assert lines[0].startswith("index,p_leq,leq,digit_a") and len(lines) == 6


def test_train_save_predict_round_trip(tmp_path, capsys):
    path = tmp_path / "b.pt"
    assert main(["train", "--model", "baseline", *TINY, "--save", str(path)]) == 0
    assert "test error" in capsys.readouterr().out
    model, meta = load_checkpoint(path)
    assert meta["model"] == "baseline" and meta["config"]["epochs"] == 1
    assert 0 <= meta["metrics"]["test_error"] <= 1


@pytest.mark.parametrize("problem, message", [
    ("text", "not a readable image"),
    ("blank", "blank image"),
    ("missing", "no such image file"),
])
def test_bad_images(tmp_path, ckpt, capsys, problem, message):
    bad = tmp_path / "bad.png"
    if problem == "text":
        bad.write_text("not an image")
    elif problem == "blank":
        Image.new("L", (40, 40), 200).save(bad)
    good = tmp_path / "good.png"
    Image.fromarray(raw_digit(0)).save(good)
    assert main(["predict", "--checkpoint", str(ckpt), str(bad), str(good)]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.png" in err


def test_wrong_tensor_shape(tmp_path):
    np.savez(tmp_path / "p.npz", input=np.zeros((3, 14, 14)))
    with pytest.raises(DataError, match=r"p.npz: expected a tensor of shape N x 2 x 14 x 14, got \(3, 1"):
        load_pairs(tmp_path / "p.npz")


def test_bad_checkpoints(tmp_path, ckpt):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        load_checkpoint(cut)

    payload = torch.load(ckpt, weights_only=True)
    for change, message in [({"model": "nope"}, "model 'nope' is not registered"),
                            ({"format_version": FORMAT_VERSION + 1}, "format version")]:
        torch.save({**payload, **change}, tmp_path / "x.pt")
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "x.pt")

    torch.save({"format": "digitcmp-checkpoint", "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")


class Evil:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""
