import pytest
import torch

from digitcmp import device
from digitcmp.config import Config
from digitcmp.errors import ConfigError
from digitcmp.train import train_rounds


def test_auto_is_the_cpu_on_a_machine_without_accelerators(monkeypatch):
    monkeypatch.setattr(device, "available", lambda kind: kind == "cpu")
    assert device.resolve_device("auto") == torch.device("cpu")
    assert device.resolve_device("cpu") == torch.device("cpu")


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(device, "available", lambda kind: kind in ("mps", "cpu"))
    assert device.resolve_device("auto").type == "mps"
    monkeypatch.setattr(device, "available", lambda kind: True)
    assert device.resolve_device("auto").type == "cuda"


def test_an_unavailable_device_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(device, "available", lambda kind: kind == "cpu")
    with pytest.raises(ConfigError, match="--device cuda: not available here .*use --device cpu or auto"):
        device.resolve_device("cuda")
    with pytest.raises(ConfigError, match="--device 'tpu'"):
        device.resolve_device("tpu")


def test_explicit_cpu_is_recorded():
    [t] = train_rounds(Config(data="embedded", pairs=40, epochs=1, batch_size=20, device="cpu"), "cnn", [0])
    assert t.record["device"] == "cpu"


def test_bf16_autocast_trains_and_fp32_is_the_default():
    assert Config().precision == "fp32"
    [t] = train_rounds(Config(data="embedded", pairs=40, epochs=1, batch_size=20, device="cpu",
                              precision="bf16"), "siamese_aux", [0])
    assert 0 <= t.record["test_error"] <= 1
    assert next(t.model.parameters()).dtype == torch.float32  # weights stay float32


def test_tf32_is_only_on_when_asked():
    device.set_precision("tf32")
    assert torch.backends.cuda.matmul.allow_tf32
    device.set_precision("fp32")
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
