"""Task functions for the executor tests (importable by spawned worker processes)."""

import os
import time
from pathlib import Path


def sleeper(config, arm, rounds, checkpoint_dir=None, progress=None):
    """Write this worker's PID to ``arm`` (a path), then sleep: a round that never ends."""
    Path(arm).write_text(str(os.getpid()))
    time.sleep(600)


def counter(config, arm, rounds, checkpoint_dir=None, progress=None):
    """Report progress of two round-epochs per round, and return a record per round."""
    for _ in rounds:
        progress(arm, 2)
    return [{"model": arm, "round": r, "pid": os.getpid()} for r in rounds]
