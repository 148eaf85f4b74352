"""A --plugin module for the executor tests: a model whose first training kills its worker."""

import os

from digitcmp.models import register
from digitcmp.models.study import Baseline


@register("dies_once")
class DiesOnce(Baseline):
    """The baseline, except that the first training forward pass anywhere ends its process
    abruptly. (Not an evaluation pass: the driver runs one to weigh tasks, ``experiment.plan``.)"""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        try:  # O_EXCL: of workers running at once, exactly one creates the marker and dies
            os.close(os.open(os.environ["DIGITCMP_TEST_MARKER"], os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return super().forward(x)
        os._exit(1)  # no exception, no cleanup: as if the worker were killed
        return super().forward(x)
