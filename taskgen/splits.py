"""Train / validation / test assignment by a hash of the question.

The split is a pure function of the question text (SHA-256, not Python's salted ``hash``),
so the same question lands in the same split in every run, on every machine, whatever
else was generated: no question can ever sit in two splits.
"""

from __future__ import annotations

import hashlib

from toolgym.envs.base import SPLITS as _BASE_SPLITS

__all__ = ["assign_split"]

SPLITS: tuple[str, str, str] = _BASE_SPLITS
"""``("train", "validation", "test")``, as docs/architecture.md names them."""


def assign_split(question: str, *, validation: float = 0.1, test: float = 0.1) -> str:
    """``train``, ``validation`` or ``test`` for ``question`` (default 80/10/10)."""
    if validation < 0 or test < 0 or validation + test > 1:
        raise ValueError("validation and test must be non-negative fractions summing to at most 1")
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test:
        return SPLITS[2]
    if u < test + validation:
        return SPLITS[1]
    return SPLITS[0]
