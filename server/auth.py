"""Bearer-key authentication. A key's *owner id* (a hash, never the key) scopes episodes.

Keys come from ``api_keys`` (fixed for the process) and ``api_keys_file`` (one key a line),
which is read again when it changes, so keys rotate without a restart: a changed file is
noticed by a cheap ``stat`` at most once a second (on the next request), and ``reload`` reads
it at once (``toolgym serve`` calls it on SIGHUP). A removed key is refused from the next
request on; an added key works from then on.

The authenticator keeps only SHA-256 digests of the keys, compares a presented key's digest
with every configured digest in constant time (no early exit, so timing shows neither which
key matched nor how much of one), and never logs a key.

A browser (the viewer, ``/ui``) cannot send a header on a page load, so the same key may also
come in the ``toolgym_key`` cookie that ``/ui/login`` sets (HttpOnly, SameSite=Strict). The
cookie is honoured for reads only (GET and HEAD): every request that changes something still
needs the ``Authorization`` header, which a forged cross-site request cannot carry, so the
cookie opens no CSRF hole even where SameSite is not enforced. ``Authenticator.owner_of_request``
is the one place that decides which credential counts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from pathlib import Path

from toolgym.errors import Unauthorized

__all__ = ["ANONYMOUS", "COOKIE_NAME", "COOKIE_METHODS", "Authenticator", "owner_id", "read_keys_file"]

ANONYMOUS = "anonymous"

COOKIE_NAME = "toolgym_key"
"""The cookie ``/ui/login`` sets: the API key itself, HttpOnly and SameSite=Strict."""
COOKIE_METHODS = frozenset({"GET", "HEAD"})
"""The only methods the cookie authenticates (reads): writes need the header (no CSRF)."""

RECHECK_INTERVAL_S = 1.0
"""How often, at most, a request checks whether the keys file changed."""

log = logging.getLogger(__name__)


def owner_id(key: str) -> str:
    """The owner id of an API key: a short hash, so stored episodes and logs never hold the key.

    The same key gives the same id across restarts, so its episodes stay its own.
    """
    return "k-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def read_keys_file(path: str) -> list[str]:
    """The keys in ``path``: one a line, ``#`` starts a comment, blank lines are skipped."""
    keys = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            keys.append(line)
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _entry(key: str) -> tuple[bytes, str]:
    """What the authenticator keeps of a key: its digest and its owner id, never the key."""
    return _digest(key), owner_id(key)


class Authenticator:
    """Maps an ``Authorization`` header to an owner id; with no keys at all, everyone is anonymous.

    Authentication is on when keys are given or a keys file is named, and it stays on for the
    life of the process: a keys file emptied by a rotation refuses every key, it never opens
    the server. Anonymous serving is allowed only on loopback or with ``insecure_no_auth``, see
    ``Settings.validate``.
    """

    def __init__(self, keys: tuple[str, ...] = (), keys_file: str | None = None) -> None:
        self._static = tuple(_entry(k) for k in dict.fromkeys(keys) if k)
        self._file = keys_file
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._checked_at = 0.0
        self._table: tuple[tuple[bytes, str], ...] = ()
        self._loaded = False
        self.enabled: bool = bool(self._static) or keys_file is not None
        """Whether requests need a key; without one every request is ``ANONYMOUS``."""
        self.reload()

    @property
    def key_count(self) -> int:
        """How many distinct keys are accepted now (a number is safe to log; keys are not)."""
        return len(self._table)

    def reload(self) -> bool:
        """Read the keys file again now (SIGHUP); returns whether the set of keys changed.

        An unreadable file keeps the keys in force and logs why: a half-finished deploy must not
        lock every trainer out, nor let anyone in.
        """
        with self._lock:
            return self._load()

    def _load(self) -> bool:
        entries = list(self._static)
        if self._file is not None:
            try:
                signature = self._stat()
                entries.extend(_entry(k) for k in read_keys_file(self._file))
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("cannot read the API keys file %s (%s); the keys in force stay", self._file,
                            type(exc).__name__)
                return False
            self._signature = signature
        self._checked_at = time.monotonic()
        table = tuple(dict(entries).items())
        changed = {d for d, _ in table} != {d for d, _ in self._table}
        if changed and self._loaded:
            log.info("API keys reloaded: %d keys accepted", len(table))
        self._table = table
        self._loaded = True
        return changed

    def _stat(self) -> tuple[int, int, int]:
        assert self._file is not None
        st = os.stat(self._file)
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _maybe_reload(self) -> None:
        """Re-read the keys file if it changed; the ``stat`` runs at most once per ``RECHECK_INTERVAL_S``."""
        if self._file is None or time.monotonic() - self._checked_at < RECHECK_INTERVAL_S:
            return
        with self._lock:
            if time.monotonic() - self._checked_at < RECHECK_INTERVAL_S:
                return
            self._checked_at = time.monotonic()
            try:
                changed = self._stat() != self._signature
            except OSError:
                changed = True  # gone or unreadable: _load logs it and keeps the keys in force
            if changed:
                self._load()

    def accepts(self, owner: str) -> bool:
        """Whether ``owner`` (an id ``owner`` returned earlier) still has a key, after any rotation.

        Long-lived sessions (the WebSocket) ask this for each frame, so a removed key stops at once.
        """
        if not self.enabled:
            return True
        self._maybe_reload()
        return any(o == owner for _, o in self._table)

    def owner(self, authorization: str | None) -> str:
        """The owner id of the key in a ``Bearer <key>`` header, or ``ANONYMOUS`` when auth is off.

        Raises ``Unauthorized`` for a missing, malformed or unknown key; its message never
        repeats the key.
        """
        if not self.enabled:
            return ANONYMOUS
        if not authorization:
            raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        self._maybe_reload()
        presented = _digest(token.strip())
        found = ""
        for digest, owner in self._table:  # every entry, every time: no early exit
            if hmac.compare_digest(digest, presented):
                found = owner
        if not found:
            raise Unauthorized("unknown API key")
        return found

    def owner_of_request(self, authorization: str | None, cookie: str | None, method: str) -> str:
        """The owner id of a request: its ``Authorization`` header, else, on a read, its ``toolgym_key`` cookie.

        The header wins when both are present, so a script's key is never replaced by a
        browser's. A cookie on a POST, PUT, PATCH or DELETE is ignored (the request is then
        as if it had no key: 401), which is the CSRF rule of the module doc.
        """
        if not authorization and cookie and method.upper() in COOKIE_METHODS:
            authorization = f"Bearer {cookie}"
        return self.owner(authorization)
