"""Progress for people, on stderr: a bar that moves every epoch, one line per finished round,
and an ETA that weighs each model by its own cost.

The bar counts work in seconds of one worker: a round-epoch of a model weighs what that
model's finished rounds took per epoch, or, before any has finished, an estimate from its
floating-point work scaled by the models measured so far. The bar disappears by itself when
stderr is not a terminal (no carriage-return frames in logs); the per-round lines stay.
"""

from __future__ import annotations

import functools
import statistics
import sys
from collections.abc import Callable

from .messages import say


class Progress:
    def __init__(self, todo: dict[str, int], epochs: dict[str, int], flops: Callable[[str], float],
                 rounds_done: int, rounds_total: int, bar: bool = True, say: Callable = say):
        """``flops(arm)``: an arm's floating-point work per pair, asked only while a bar is shown."""
        self.epochs, self.say = epochs, say
        self.flops = functools.cache(flops)
        self.left = {a: n * epochs[a] for a, n in todo.items()}  # round-epochs still to train
        self.done = dict.fromkeys(todo, 0.0)  # round-epochs trained by this process
        self.per_epoch: dict[str, list[float]] = {}  # measured seconds per round-epoch
        self.rounds_done, self.rounds_total = rounds_done, rounds_total
        self.bar = None
        if bar:
            from tqdm import tqdm

            # disable=None: off when stderr is not a terminal. smoothing=0: the rate is the
            # mean over the run, which stays right when the weights are re-estimated.
            self.bar = tqdm(total=1.0, file=sys.stderr, disable=None, smoothing=0, dynamic_ncols=True,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
            self._redraw()

    def weight(self, arm: str) -> float:
        """Estimated seconds of one worker per round-epoch of ``arm``."""
        if arm in self.per_epoch:
            return statistics.mean(self.per_epoch[arm])
        ratios = [statistics.mean(v) / self.flops(a) for a, v in self.per_epoch.items() if self.flops(a)]
        scale = statistics.median(ratios) if ratios else 1e-9  # any unit works until a measurement
        return max(self.flops(arm), 1.0) * scale

    def epochs_done(self, arm: str, k: float) -> None:
        """``k`` more round-epochs of ``arm`` are trained."""
        self.left[arm] = max(0.0, self.left[arm] - k)
        self.done[arm] += k
        self._redraw()

    def round_done(self, record: dict) -> None:
        """A round finished: a line for it, and its time refines its model's weight."""
        arm = record["model"]
        self.rounds_done += 1
        epochs = self.epochs.get(arm) or 1
        if record.get("seconds"):
            self.per_epoch.setdefault(arm, []).append(record["seconds"] / epochs)
        line = (f"digitcmp: {arm} round {record['round']}: test error {100 * record['test_error']:.2f} %, "
                f"{record.get('seconds', 0):.0f} s ({self.rounds_done}/{self.rounds_total} rounds)")
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=sys.stderr)
        else:
            self.say(line)
        self._redraw()

    def _redraw(self) -> None:
        if self.bar is None or self.bar.disable:
            return
        done = sum(k * self.weight(a) for a, k in self.done.items())
        self.bar.total = done + sum(k * self.weight(a) for a, k in self.left.items()) or 1.0
        self.bar.n = done
        self.bar.set_description_str(f"{self.rounds_done}/{self.rounds_total} rounds", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
