import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import digitcmp
from digitcmp.cli import main
from digitcmp.data.idx import read_idx
from digitcmp.data.sources import shipped_dir
from digitcmp.errors import DataError
from digitcmp.predict import load_pairs, mnist_like, read_image


def raw_digit(i: int = 0) -> np.ndarray:
    """A real 28x28 MNIST test digit as uint8."""
    return read_idx(shipped_dir() / "t10k-images-idx3-ubyte.gz")[i]


def test_preprocessing_recovers_an_mnist_digit():
    digit = raw_digit(3)
    scan = np.full((150, 130), 255, dtype=np.uint8)  # dark ink on white, 4x, off-centre
    big = np.asarray(Image.fromarray(255 - digit).resize((112, 112), Image.BICUBIC))
    scan[20:132, 5:117] = big
    back = mnist_like(scan).astype(float)
    corr = np.corrcoef(back.ravel(), digit.astype(float).ravel())[0, 1]
    assert back.shape == (28, 28) and corr > 0.9


def test_16_bit_images_are_scaled_not_binarised(tmp_path):
    digit = raw_digit(0).astype(np.uint16) * 257  # the same digit, 16 bits per pixel
    Image.fromarray(digit).save(tmp_path / "d16.png")
    a = read_image(tmp_path / "d16.png")
    assert a.max() == 255 and len(np.unique(a)) > 10
    assert np.allclose(a, raw_digit(0), atol=1)


def test_predict_images_and_pairs_from_the_cli(tmp_path, checkpoint, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(255 - raw_digit(0)).resize((80, 80)).save(a)
    Image.fromarray(raw_digit(1)).save(b)
    assert main(["predict", "--checkpoint", str(checkpoint), str(a), str(b), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 <= res["p_leq"] <= 1 and res["digit_a"] in range(10) and 0 <= res["p_digit_b"] <= 1
    predictor = digitcmp.load(checkpoint)
    assert predictor.predict(a, b) == {k: v for k, v in res.items() if k not in ("a", "b")}

    pairs = tmp_path / "pairs.npz"
    np.savez(pairs, input=read_idx(shipped_dir() / "t10k-images-idx3-ubyte.gz")[:10, ::2, ::2]
             .reshape(5, 2, 14, 14))
    assert main(["predict", "--checkpoint", str(checkpoint), "--pairs-file", str(pairs)]) == 0
    out = tmp_path / "pairs.predictions.csv"
    lines = out.read_text().splitlines()
    assert lines[0].startswith("index,p_leq,leq,digit_a") and len(lines) == 6
    assert "wrote 5 predictions" in capsys.readouterr().err
    # Never over a file the user did not ask to replace, and never over the input.
    assert main(["predict", "--checkpoint", str(checkpoint), "--pairs-file", str(pairs)]) == 2
    assert "exists; add --force" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(checkpoint), "--pairs-file", str(pairs), "--force"]) == 0
    assert main(["predict", "--checkpoint", str(checkpoint), "--pairs-file", str(pairs), "--out",
                 str(pairs), "--force"]) == 2
    assert "is the input file" in capsys.readouterr().err and np.load(pairs)["input"].shape == (5, 2, 14, 14)


@pytest.mark.parametrize("problem, message", [
    ("text", "not a readable image"),
    ("blank", "blank image"),
    ("missing", "no such image file"),
    ("directory", "is a directory"),
    ("huge", "pixels"),
    ("broken chunk", "broken PNG file"),
])
def test_bad_images(tmp_path, checkpoint, capsys, problem, message):
    bad = tmp_path / "bad.png"
    if problem == "text":
        bad.write_text("not an image")
    elif problem == "broken chunk":  # the image data's length halved: the next chunk is garbage
        Image.fromarray(raw_digit(0)).save(bad)
        raw = bytearray(bad.read_bytes())
        at = raw.find(b"IDAT")
        raw[at - 4:at] = struct.pack(">I", struct.unpack(">I", raw[at - 4:at])[0] // 2)
        bad.write_bytes(bytes(raw))
    elif problem == "blank":
        Image.new("L", (40, 40), 200).save(bad)
    elif problem == "directory":
        bad.mkdir()
    elif problem == "huge":
        Image.new("1", (20000, 20000)).save(bad)
    good = tmp_path / "good.png"
    Image.fromarray(raw_digit(0)).save(good)
    assert main(["predict", "--checkpoint", str(checkpoint), str(bad), str(good)]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.png" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("array, message", [
    (np.zeros((3, 14, 14)), r"expected a tensor of shape N x 2 x 14 x 14, got \(3, 14, 14\)"),
    (np.full((1, 2, 14, 14), np.nan), "must be finite real numbers"),
    (np.zeros((1, 2, 14, 14), dtype=bool), "must be finite real numbers"),
])
def test_bad_pair_files(tmp_path, array, message):
    np.savez(tmp_path / "p.npz", input=array)
    with pytest.raises(DataError, match=message):
        load_pairs(tmp_path / "p.npz")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".tif"]))
def test_arbitrary_bytes_as_an_image_raise_only_data_errors(tmp_path, data, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    try:
        mnist_like(read_image(path), str(path))
    except DataError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 10**6), value=st.integers(0, 255), cut=st.integers(0, 200))
def test_mutated_png_raises_only_data_errors(tmp_path, position, value, cut):
    path = tmp_path / "d.png"
    Image.fromarray(raw_digit(5)).save(path)
    raw = bytearray(path.read_bytes())
    raw[position % len(raw)] = value
    path.write_bytes(bytes(raw[: len(raw) - cut]))
    try:
        mnist_like(read_image(path), str(path))
    except DataError:
        pass


def test_train_save_predict_round_trip(tmp_path, capsys):
    from digitcmp.checkpoint import load_checkpoint

    path = tmp_path / "b.pt"
    argv = ["train", "--model", "baseline", "--data", "embedded", "--pairs", "100", "--epochs", "1",
            "--save", str(path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "test error" in captured.out and "saved" in captured.err
    model, meta = load_checkpoint(path)
    assert meta["model"] == "baseline" and meta["config"]["epochs"] == 1
    assert 0 <= meta["metrics"]["test_error"] <= 1
    assert main(argv) == 2 and "exists; add --force" in capsys.readouterr().err
    assert torch.load(path, weights_only=True)["model"] == "baseline"
