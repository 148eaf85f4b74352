"""How digitcmp talks to people while it works: one line at a time, on stderr, so that stdout
holds only results (``digitcmp reproduce > table.md`` captures Table III alone)."""

import sys


def say(message: str = "") -> None:
    """A diagnostic line for people, on stderr."""
    print(message, file=sys.stderr, flush=True)
