"""The errors digitcmp reports to its user: one line naming the file, option or value, and why.

The command line prints any ``DigitcmpError`` as ``digitcmp: error: <message>`` and exits 2;
anything else is a bug and keeps its traceback.
"""


class DigitcmpError(Exception):
    """A problem the user can fix; the message says what and where."""


class ConfigError(DigitcmpError):
    """An option, a variant or a sweep file asks for something that cannot run."""


class DataError(DigitcmpError):
    """A data file or source is missing, corrupt or unusable."""


class RunDirError(DigitcmpError):
    """A run directory cannot be used as asked (another config, malformed files, locked...)."""


class CheckpointError(DigitcmpError):
    """A checkpoint cannot be loaded or saved."""


class TrainingError(DigitcmpError):
    """A training went wrong in a way that makes its result meaningless (e.g. a non-finite loss)."""


class ExecutorError(DigitcmpError):
    """Workers could not run the tasks (a dead worker, a Ray that would not start...)."""


class OutputError(DigitcmpError):
    """An output file or directory cannot be written (missing, read-only, full disk...)."""
