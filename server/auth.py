"""Bearer-key authentication. A key's *owner id* (a hash, never the key) scopes episodes."""

from __future__ import annotations

import hashlib
import hmac

from toolgym.errors import Unauthorized

__all__ = ["ANONYMOUS", "Authenticator", "owner_id"]

ANONYMOUS = "anonymous"


def owner_id(key: str) -> str:
    """The owner id of an API key: a short hash, so stored episodes and logs never hold the key.

    The same key gives the same id across restarts, so its episodes stay its own.
    """
    return "k-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


class Authenticator:
    """Maps an ``Authorization`` header to an owner id; with no keys, everyone is anonymous.

    Anonymous serving is allowed only on loopback or with ``insecure_no_auth``, see
    ``Settings.validate``.
    """

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._owners = {k: owner_id(k) for k in keys}

    @property
    def enabled(self) -> bool:
        """Whether any API key is configured; without one every request is ``ANONYMOUS``."""
        return bool(self._owners)

    def owner(self, authorization: str | None) -> str:
        """The owner id of the key in a ``Bearer <key>`` header, or ``ANONYMOUS`` when no keys are set.

        Keys are compared in constant time. Raises ``Unauthorized`` for a missing, malformed or
        unknown key.
        """
        if not self._owners:
            return ANONYMOUS
        if not authorization:
            raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        token = token.strip()
        for key, owner in self._owners.items():
            if hmac.compare_digest(key.encode(), token.encode()):
                return owner
        raise Unauthorized("unknown API key")
