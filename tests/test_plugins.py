import sys

import pytest

from digitcmp.errors import ConfigError
from digitcmp.models import MODELS
from digitcmp.plugins import load_plugins, resolve_plugin

PLUGIN = '''
from digitcmp.models import register
from digitcmp.models.study import Baseline

@register("{name}")
class Mine(Baseline):
    description = "a test plugin"
'''


def test_a_module_in_the_working_directory_is_found_and_resolved_to_its_file(tmp_path, monkeypatch):
    (tmp_path / "plug_cwd.py").write_text(PLUGIN.format(name="plug_cwd_model"))
    monkeypatch.chdir(tmp_path)
    resolved = resolve_plugin("plug_cwd")
    assert resolved == str(tmp_path / "plug_cwd.py") and "plug_cwd_model" in MODELS
    assert str(tmp_path) not in sys.path and "" not in sys.path  # only that module was imported
    load_plugins([resolved, "plug_cwd"])  # again, by path or name: imported once, not re-registered


def test_a_path_to_a_file(tmp_path):
    (tmp_path / "by_path.py").write_text(PLUGIN.format(name="plug_path_model"))
    assert resolve_plugin(str(tmp_path / "by_path.py")) == str(tmp_path / "by_path.py")
    assert "plug_path_model" in MODELS


def test_an_installed_module_stays_a_name():
    assert resolve_plugin("json") == "json"


@pytest.mark.parametrize("source, message", [
    ("def broken(:\n", "syntax error in .*bad_syntax.py, line 1"),
    ("raise RuntimeError('boom')\n", "importing it failed: RuntimeError: boom"),
    ("import no_such_dependency_xyz\n", "importing it failed: ModuleNotFoundError"),
])
def test_a_broken_plugin_is_one_line(tmp_path, monkeypatch, source, message):
    (tmp_path / "bad_syntax.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"--plugin bad_syntax: {message}"):
        resolve_plugin("bad_syntax")
    assert "bad_syntax" not in sys.modules


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz", "no module of that name"),
    ("missing/file.py", "no such file"),
    ("not a name", "not a module name"),
])
def test_unknown_plugins(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        resolve_plugin(spec)
