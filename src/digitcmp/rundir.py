"""The run directory: the one place its format is read and written.

A run directory holds:
  config.json   the *manifest*: the resolved config, the options each arm actually trained with,
                the data source, package versions, the device and the command line;
  rounds.jsonl  one JSON line per finished (arm, round), appended and fsynced as it finishes;
  and what ``report`` derives from them (tables, figures, report.md).

Only the driver process writes it, under an exclusive lock held for the whole run, so a worker
that dies cannot corrupt it, a second run into the same directory is refused at once, and a
killed run loses at most the rounds in flight. Rerunning into the same directory resumes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .config import Config
from .errors import ConfigError, RunDirError
from .files import atomic_write
from .messages import say

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per directory is then up to the user
    fcntl = None

LOCK_NOTE = ".digitcmp-lock"  # holds the PID of the run holding the lock, while it runs
REQUIRED = {"model": str, "round": int, "train_error": (int, float), "test_error": (int, float)}


def parse_record(line: bytes, where: str) -> dict:
    """One rounds.jsonl line as a dict, checked for the fields every reader relies on."""
    try:
        rec = json.loads(line)
    except ValueError as e:
        raise RunDirError(f"{where}: malformed result line ({e})") from None
    if not isinstance(rec, dict):
        raise RunDirError(f"{where}: malformed result line (a {type(rec).__name__}, not an object)")
    for key, kind in REQUIRED.items():
        if key not in rec:
            raise RunDirError(f"{where}: malformed result line (missing field {key!r})")
        value = rec[key]
        # A required error is a number in every genuine record: NaN (which JSON readers accept)
        # would pass the range check below, since NaN compares false with everything.
        if isinstance(value, bool) or not isinstance(value, kind) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise RunDirError(f"{where}: malformed result line ({key} is {value!r})")
    if rec["round"] < 0:
        raise RunDirError(f"{where}: malformed result line (round {rec['round']})")
    for key, value in rec.items():
        if key.endswith("error") and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            if not (value is None or (isinstance(value, float) and math.isnan(value))):
                raise RunDirError(f"{where}: malformed result line ({key} is {value!r}, not a fraction)")
    return rec


def read_rounds(path: str | os.PathLike, config: Config | None = None, cut_torn: bool = False,
                say: Callable = say) -> list[dict]:
    """Parse rounds.jsonl, each (model, round) once (a duplicate is said and skipped).

    A torn last line (a run killed mid-write) is dropped, and with ``cut_torn`` cut from the file;
    any other malformed line, or a record of a model or round ``config`` does not hold, is an
    error naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RunDirError(f"{path}: cannot read ({e.strerror or e})") from None
    lines = raw.split(b"\n")
    results, seen, offset = [], set(), 0
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                rec = parse_record(line, f"{path}:{i}")
            except RunDirError:
                if i == len(lines):  # no newline after it: the write was cut short
                    if cut_torn:
                        with open(path, "r+b") as f:
                            f.truncate(offset)
                    say(f"digitcmp: {path}:{i}: dropped an unfinished line")
                    break
                raise
            key = (rec["model"], rec["round"])
            if config is not None and (rec["model"] not in config.models or rec["round"] >= config.rounds):
                raise RunDirError(f"{path}:{i}: a result for {rec['model']} round {rec['round']}, "
                                  "which this run's config.json does not hold")
            if key in seen:
                say(f"digitcmp: {path}:{i}: {key[0]} round {key[1]} appears twice; the first is used")
            else:
                seen.add(key)
                results.append(rec)
        offset += len(line) + 1
    return results


def read_manifest(path: str | os.PathLike) -> tuple[dict, Config]:
    """config.json: the manifest and its Config, with a one-line error for any malformation."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing; is {path.parent} a digitcmp run directory?") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    except ValueError as e:
        raise RunDirError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise RunDirError(f"{path}: not a digitcmp manifest (expected an object with a 'config' object)")
    try:
        config = Config.from_dict(manifest["config"])
    except ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None
    return manifest, config


def load_run(run_dir: str | os.PathLike, say: Callable = say) -> tuple[dict, Config, list[dict]]:
    """The manifest, config and finished rounds of a run directory, for reading."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    manifest, config = read_manifest(run_dir / "config.json")
    results = read_rounds(run_dir / "rounds.jsonl", config, say=say)
    if not results:
        raise RunDirError(f"{run_dir / 'rounds.jsonl'}: no finished rounds yet")
    return manifest, config, results


class RunDir:
    """The files of one run directory, written only by the driver, under its lock."""

    def __init__(self, path: str | os.PathLike, say: Callable = say):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.rounds_path = self.path / "rounds.jsonl"
        self.say = say

    def check_usable(self) -> None:
        """Refuse a path that is not a directory, or a directory that is not a digitcmp run
        (so that nothing of the user's is overwritten)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {self.path}: exists and is not a directory")
        if self.path.is_dir() and not self.config_path.exists():
            other = [p.name for p in self.path.iterdir() if p.name != LOCK_NOTE]
            if other:
                raise RunDirError(f"--out {self.path}: not a digitcmp run directory (no config.json, "
                                  f"holds {other[0]!r}); give a new or empty directory")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's exclusive lock (creating the directory) for the block; a
        directory this creates and leaves empty (a refused run) is removed again."""
        self.check_usable()
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise RunDirError(f"--out {self.path}: cannot create or open ({e.strerror or e})") from None
        note = self.path / LOCK_NOTE
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    try:
                        holder = f"PID {int(note.read_text())}"
                    except (OSError, ValueError):
                        holder = "another process"
                    raise RunDirError(f"{self.path} is in use by another digitcmp run ({holder}); "
                                      "wait for it to finish or use another --out") from None
            with contextlib.suppress(OSError):
                note.write_text(str(os.getpid()))
            try:
                yield
            finally:
                note.unlink(missing_ok=True)
        finally:
            os.close(fd)
            if created and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()

    def merged_manifest(self, manifest: dict) -> dict:
        """``manifest`` as the run directory will hold it: checked against an existing run's
        config (refused if it changes what finished rounds mean), extent and arms merged."""
        if not self.config_path.exists():
            return manifest
        old_manifest, old_cfg = read_manifest(self.config_path)
        new, old = manifest["config"], old_cfg.to_dict()
        diff = [k for k in new if k not in Config.EXTENT and new[k] != old.get(k)]
        # New variants extend the run like new models; a changed one would change its rounds.
        if "variants" in diff and all(old["variants"].get(k, v) == v for k, v in new["variants"].items()):
            diff.remove("variants")
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} there, {new[k]!r} now" for k in diff)
            raise RunDirError(f"{self.path} holds a run with another config ({details}); "
                              "use another --out or the same options")
        models = old["models"] + [m for m in new["models"] if m not in old["models"]]
        merged = dict(new, models=models, rounds=max(new["rounds"], old["rounds"]),
                      variants={**old["variants"], **new["variants"]})
        resolved = {**(old_manifest.get("resolved") or {}), **manifest.get("resolved", {})}
        return dict(manifest, config=merged, resolved=resolved)

    def open(self, manifest: dict) -> list[dict]:
        """Write the (merged) manifest and return the rounds already finished. Call it holding
        the lock, after every check that can refuse the run has passed."""
        manifest = self.merged_manifest(manifest)
        atomic_write(self.config_path, json.dumps(manifest, indent=2) + "\n")
        if not self.rounds_path.exists():
            return []
        return read_rounds(self.rounds_path, Config.from_dict(manifest["config"]), cut_torn=True,
                           say=self.say)

    def append(self, result: dict) -> None:
        """Add one finished round; fsync so a crash right after keeps it."""
        try:
            with open(self.rounds_path, "a") as f:
                f.write(json.dumps(result) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise RunDirError(f"{self.rounds_path}: cannot append a finished round "
                              f"({e.strerror or e}); finished rounds so far are kept") from None
