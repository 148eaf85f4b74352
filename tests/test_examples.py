import runpy
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_make_digit_images_writes_test_and_font_digits(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["make_digit_images.py", "--out", str(tmp_path / "d"), "--indices", "0"])
    runpy.run_path(str(EXAMPLES / "make_digit_images.py"), run_name="__main__")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["font-3.png", "font-8.png", "t10k-0-7.png"]
