import os

import pytest

from digitcmp.errors import OutputError
from digitcmp.files import atomic_write, check_output_file


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_text() == "two" and oct(path.stat().st_mode)[-3:] == "644"
    assert os.listdir(path.parent) == ["a.txt"]


def test_atomic_write_failures_are_output_errors(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputError, match="dir: cannot write"):
        atomic_write(tmp_path / "dir", "x")  # a directory where the file should go
    assert os.listdir(tmp_path) == ["dir"]


def test_check_output_file_read_only_directory(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    # As root every directory is writable; ask os.access as an ordinary user would be answered.
    monkeypatch.setattr(os, "access", lambda p, mode: os.stat(p).st_mode & 0o200 != 0)
    with pytest.raises(OutputError, match="ro is not writable"):
        check_output_file(ro / "m.pt")


def test_check_output_file(tmp_path):
    assert check_output_file(tmp_path / "m.pt") == tmp_path / "m.pt"
    with pytest.raises(OutputError, match="is a directory"):
        check_output_file(tmp_path)
    with pytest.raises(OutputError, match="is a directory"):
        check_output_file(str(tmp_path / "new") + os.sep)
    with pytest.raises(OutputError, match="does not exist"):
        check_output_file(tmp_path / "missing" / "m.pt")
