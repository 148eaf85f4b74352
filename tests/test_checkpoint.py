import io
import zipfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitcmp.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint, weights_digest
from digitcmp.errors import CheckpointError


def test_round_trip_gives_identical_predictions(checkpoint, trained_siamese):
    model, data = trained_siamese.model, trained_siamese.data
    loaded, meta = load_checkpoint(checkpoint)
    with torch.inference_mode():
        for a, b in zip(model.eval()(data.test.input), loaded(data.test.input), strict=True):
            assert torch.equal(a, b)
    assert meta["normalisation"] == {"mean": data.mean, "std": data.std}
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["weights_sha256"] == weights_digest(model.state_dict())
    assert meta["metrics"]["test_error"] == trained_siamese.record["test_error"]


def test_a_checkpoint_recorded_on_cuda_loads_on_the_cpu(tmp_path, checkpoint):
    payload = torch.load(checkpoint, weights_only=True)
    payload["device"] = "cuda:0"
    torch.save(payload, tmp_path / "cuda.pt")
    model, meta = load_checkpoint(tmp_path / "cuda.pt")
    assert meta["device"] == "cuda:0" and next(model.parameters()).device.type == "cpu"


def test_non_finite_weights_are_never_saved(tmp_path, trained_siamese):
    model = trained_siamese.model
    with torch.no_grad():
        model.compare.weight[0, 0] = float("nan")
    try:
        with pytest.raises(CheckpointError, match="compare.weight are not finite"):
            save_checkpoint(tmp_path / "nan.pt", model, "siamese_aux", config={}, source={}, mean=0.0,
                            std=1.0, metrics={}, round=0)
        assert not (tmp_path / "nan.pt").exists()
    finally:
        with torch.no_grad():
            model.compare.weight[0, 0] = 0.0


def test_bad_checkpoints(tmp_path, checkpoint):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(checkpoint.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        load_checkpoint(cut)
    payload = torch.load(checkpoint, weights_only=True)
    for change, message in [
        ({"model": "nope"}, "model 'nope' is not registered"),
        ({"model": None}, "field 'model' is missing"),
        ({"format_version": FORMAT_VERSION + 1}, "format version"),
        ({"state_dict": {"a": 1}}, "field 'state_dict'"),
        ({"normalisation": {"mean": 0.0, "std": 0.0}}, "normalisation.std"),
        ({"normalisation": {"mean": "x", "std": 1.0}}, "normalisation.mean"),
        ({"model_kwargs": []}, "model_kwargs"),
        ({"model": "cnn"}, "weights do not fit model 'cnn'"),
    ]:
        torch.save({**payload, **change}, tmp_path / "x.pt")
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "x.pt")
    for other in ([1, 2], "hello", {"format": "other"}):
        torch.save(other, tmp_path / "o.pt")
        with pytest.raises(CheckpointError, match="not a digitcmp checkpoint"):
            load_checkpoint(tmp_path / "o.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "empty.pt")
    torch.save({"format": "digitcmp-checkpoint", "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")


def test_damaged_weights_are_refused(tmp_path, checkpoint):
    payload = torch.load(checkpoint, weights_only=True)
    payload["state_dict"]["compare.bias"] += 1e-3  # as a flipped bit in the file would
    torch.save(payload, tmp_path / "flipped.pt")
    with pytest.raises(CheckpointError, match="do not match their digest"):
        load_checkpoint(tmp_path / "flipped.pt")


class Evil:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 10**9), value=st.integers(0, 255), cut=st.integers(0, 3))
def test_mutated_checkpoints_raise_only_checkpoint_errors(tmp_path, checkpoint, position, value, cut):
    raw = bytearray(checkpoint.read_bytes())
    raw[position % len(raw)] = value
    path = tmp_path / "mutant.pt"
    path.write_bytes(bytes(raw[: len(raw) - cut * 1000]))
    try:
        load_checkpoint(path)
    except CheckpointError:
        pass


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(member=st.binary(max_size=200))
def test_arbitrary_archives_raise_only_checkpoint_errors(tmp_path, member):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", member)
    path = tmp_path / "z.pt"
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
