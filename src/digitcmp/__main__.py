import os
import sys

# `python -m digitcmp` puts the working directory first on sys.path; a `PIL/` or `tomllib.py`
# there would then shadow the real libraries. Only --plugin may import code from it.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from digitcmp.cli import main  # noqa: E402

sys.exit(main())
