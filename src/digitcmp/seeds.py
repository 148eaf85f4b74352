"""Seeds: every random draw of a round comes from a generator seeded by (seed, round, purpose).

So a round's pairs, initialisation, batch order and dropout masks depend on nothing else: not on
which other rounds ran before it in the process, nor on which rounds it is trained with.
"""

from __future__ import annotations

import hashlib

import torch


def seed_for(seed: int, round: int, purpose: str) -> int:
    """A 63-bit seed that depends only on (seed, round, purpose), stable across machines."""
    key = f"{seed}/{round}/{purpose}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def generator(seed: int, round: int, purpose: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded for one purpose ("data", "batches", "dropout", ...) of one round."""
    return torch.Generator(device=device).manual_seed(seed_for(seed, round, purpose))
