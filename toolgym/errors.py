"""One error tree for ToolGym, shared by the server and the client.

Every failure a user can meet is one of these classes. The server raises them and maps them
to HTTP in exactly one table (``HTTP_STATUS``); the client maps the wire ``code`` back to the
same class (``error_from_wire``), so ``except EpisodeNotFound`` works on both sides.

    ToolGymError                      500 internal
    ├── BadRequest                    400 bad_request        (malformed JSON, unreadable body)
    ├── Unauthorized                  401 unauthorized       (no or wrong API key)
    ├── NotFound                      404 not_found
    │   ├── EnvNotFound               404 env_not_found      (with a "did you mean")
    │   ├── TaskNotFound              404 task_not_found
    │   └── EpisodeNotFound           404 episode_not_found  (unknown, or another key's)
    ├── Conflict                      409 conflict
    │   ├── EpisodeFinished           409 episode_finished   (step after the end)
    │   ├── TurnMismatch              409 turn_mismatch      (expected_turn ahead of the episode)
    │   └── DuplicateTask             409 duplicate_task
    ├── PayloadTooLarge               413 payload_too_large
    ├── UnsupportedMediaType          415 unsupported_media_type (a body that is not JSON/JSONL)
    ├── ValidationFailed              422 validation_failed  (schema, bad record, bad options)
    │   └── JudgeNotConfigured        422 judge_not_configured
    ├── QuotaExceeded                 429 quota_exceeded     (per-key live-episode limit)
    ├── RateLimited                   429 rate_limited       (retryable; per-key request rate)
    ├── EpisodeLost                   --  episode_lost       (client side: the episode's server is down)
    └── Unavailable                   503 unavailable        (retryable; carries retry_after_s)
        ├── AtCapacity                503 at_capacity        (live-episode limit reached)
        ├── Overloaded                503 overloaded         (request concurrency limit reached)
        ├── ShuttingDown              503 shutting_down
        ├── JudgeUnavailable          503 judge_unavailable  (too few judge votes came back)
        ├── StoreUnavailable          503 store_unavailable  (the store could not write: disk full, I/O error)
        └── SandboxError              503 sandbox_error      (the sandbox failed, not the policy)
            └── SandboxTimeout        503 sandbox_timeout    (the sandbox stopped answering)

A failure of a policy's *action* (bad tool call, tool code that raises or loops) is never an
exception: it is data in the step result (``info["status"]``). Exceptions are for requests
the server cannot honour and for failures of ToolGym itself.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AtCapacity",
    "BadRequest",
    "Conflict",
    "DuplicateTask",
    "EnvNotFound",
    "EpisodeFinished",
    "EpisodeLost",
    "EpisodeNotFound",
    "HTTP_STATUS",
    "JudgeNotConfigured",
    "JudgeUnavailable",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "SandboxError",
    "SandboxTimeout",
    "ShuttingDown",
    "StoreUnavailable",
    "TaskNotFound",
    "ToolGymError",
    "TurnMismatch",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
    "error_from_wire",
]


class ToolGymError(Exception):
    """Base of every ToolGym error; ``code`` is the stable wire name, ``details`` the facts."""

    code = "internal"
    retryable = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_wire(self) -> dict[str, Any]:
        """The JSON error body the server sends; ``error_from_wire`` is its inverse."""
        body: dict[str, Any] = {"code": self.code, "message": self.message, "retryable": self.retryable}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class BadRequest(ToolGymError):
    """The request could not be read (malformed JSON, unreadable body), before any validation."""

    code = "bad_request"


class Unauthorized(ToolGymError):
    """No API key, or one the server does not know."""

    code = "unauthorized"


class NotFound(ToolGymError):
    """Base of the 404s; catch it to handle any missing env, task or episode alike."""

    code = "not_found"


class EnvNotFound(NotFound):
    """No env with this id; ``suggestion`` is the nearest known id, if any is close."""

    code = "env_not_found"

    def __init__(self, env_id: str, suggestion: str | None = None) -> None:
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(f"no env {env_id!r}{hint}", env_id=env_id, suggestion=suggestion)
        self.env_id = env_id
        self.suggestion = suggestion


class TaskNotFound(NotFound):
    """The env exists but has no task with this id."""

    code = "task_not_found"

    def __init__(self, env_id: str, task_id: str) -> None:
        super().__init__(f"env {env_id!r} has no task {task_id!r}", env_id=env_id, task_id=task_id)
        self.env_id = env_id
        self.task_id = task_id


class EpisodeNotFound(NotFound):
    """No such episode for this API key: another key's episode is reported the same way, so ids do not leak."""

    code = "episode_not_found"

    def __init__(self, episode_id: str) -> None:
        super().__init__(f"no episode {episode_id!r} for this API key", episode_id=episode_id)
        self.episode_id = episode_id


class Conflict(ToolGymError):
    """Base of the 409s: the request is well formed but clashes with the current state."""

    code = "conflict"


class EpisodeFinished(Conflict):
    """A step on an episode that has already ended; ``reason`` says how it ended."""

    code = "episode_finished"

    def __init__(self, episode_id: str, reason: str | None) -> None:
        super().__init__(
            f"episode {episode_id!r} has ended ({reason}); reset to start a new one",
            episode_id=episode_id,
            reason=reason,
        )
        self.episode_id = episode_id
        self.reason = reason


class TurnMismatch(Conflict):
    """The step's ``expected_turn`` is ahead of the episode; one already played replays its result instead."""

    code = "turn_mismatch"

    def __init__(self, episode_id: str, expected_turn: int, turn: int) -> None:
        super().__init__(
            f"episode {episode_id!r} is at turn {turn}, the step expected turn {expected_turn}",
            episode_id=episode_id,
            expected_turn=expected_turn,
            turn=turn,
        )
        self.episode_id = episode_id
        self.expected_turn = expected_turn
        self.turn = turn


class DuplicateTask(Conflict):
    """A task with this id is already registered for the env."""

    code = "duplicate_task"

    def __init__(self, env_id: str, task_id: str) -> None:
        super().__init__(f"env {env_id!r} already has a task {task_id!r}", env_id=env_id, task_id=task_id)
        self.env_id = env_id
        self.task_id = task_id


class PayloadTooLarge(ToolGymError):
    """The request body is over the server's size limit."""

    code = "payload_too_large"


class UnsupportedMediaType(ToolGymError):
    """The body's ``Content-Type`` is not one the route reads (JSON, or JSONL where tasks are uploaded)."""

    code = "unsupported_media_type"


class ValidationFailed(ToolGymError):
    """The request was read but is not valid: schema, a bad record, bad options."""

    code = "validation_failed"


class JudgeNotConfigured(ValidationFailed):
    """The server has no label judge configured (asking again will not help)."""

    code = "judge_not_configured"


class QuotaExceeded(ToolGymError):
    """This API key holds as many open episodes as it may; close some, since retrying alone will not help."""

    code = "quota_exceeded"


class EpisodeLost(ToolGymError):
    """The server that holds the episode no longer answers, so the episode is gone.

    Its state and its sandbox lived in that server. Raised by ``FleetClient``, never sent by a
    server; not retryable: reset to start a new episode on a server that answers.
    """

    code = "episode_lost"

    def __init__(self, episode_id: str, base_url: str, reason: str) -> None:
        super().__init__(
            f"episode {episode_id!r} lived on {base_url}, which does not answer ({reason}); "
            "reset to start a new episode",
            episode_id=episode_id, base_url=base_url, reason=reason,
        )
        self.episode_id = episode_id
        self.base_url = base_url
        self.reason = reason


class RateLimited(ToolGymError):
    """This API key sent requests faster than the server's per-key rate allows.

    Unlike ``QuotaExceeded``, waiting is enough: ``retry_after_s`` is the time until the key's
    token bucket holds a token again, so the same request may be sent then.
    """

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, retry_after_s: float = 1.0, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


class Unavailable(ToolGymError):
    """The server cannot serve this now; the same request may succeed after ``retry_after_s``."""

    code = "unavailable"
    retryable = True

    def __init__(self, message: str, retry_after_s: float = 1.0, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


class AtCapacity(Unavailable):
    """The server holds as many live episodes as it may; retry once some have closed."""

    code = "at_capacity"


class Overloaded(Unavailable):
    """The server has as many HTTP requests in flight as it may (``max_concurrent_requests``).

    Refused at once rather than queued, so a flood gets a fast 503 instead of a slow timeout.
    """

    code = "overloaded"


class ShuttingDown(Unavailable):
    """The server is draining and takes no new work; retry against it once restarted."""

    code = "shutting_down"


class JudgeUnavailable(Unavailable):
    """Too many judge votes failed to reach a majority; the same request may succeed later."""

    code = "judge_unavailable"


class StoreUnavailable(Unavailable):
    """The store could not write (disk full, I/O error), so the request was not acknowledged.

    Nothing of it is on disk and nothing of it counts: a step refused this way was not played as
    far as the episode is concerned, and the same request may be sent again once space is back.
    """

    code = "store_unavailable"


class SandboxError(Unavailable):
    """The sandbox failed (died, could not start): an infrastructure failure, never a reward."""

    code = "sandbox_error"


class SandboxTimeout(SandboxError):
    """The sandbox stopped answering within its deadline: the sandbox's fault, not the policy's."""

    code = "sandbox_timeout"


# The one table from error class to HTTP status. Subclasses inherit their parent's row.
HTTP_STATUS: dict[type[ToolGymError], int] = {
    ToolGymError: 500,
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    ValidationFailed: 422,
    QuotaExceeded: 429,
    RateLimited: 429,
    Unavailable: 503,
}


def http_status(error: ToolGymError) -> int:
    """The HTTP status for ``error``: the row of its nearest class in ``HTTP_STATUS``."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def _all_subclasses(cls: type[ToolGymError]) -> list[type[ToolGymError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def error_from_wire(status: int, body: Any) -> ToolGymError:
    """Rebuild the typed error from a server's error response (used by the client)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return ToolGymError(f"HTTP {status}: {body!r}"[:500], status=status)
    code = str(err.get("code", "internal"))
    message = str(err.get("message", f"HTTP {status}"))
    details = err.get("details") or {}
    by_code = {c.code: c for c in _all_subclasses(ToolGymError)}
    cls = by_code.get(code)
    if cls is None:
        # An unknown code from a newer server: fall back on the status row.
        cls = next((c for c, s in HTTP_STATUS.items() if s == status), ToolGymError)
    exc = cls.__new__(cls)
    ToolGymError.__init__(exc, message, **details)
    for key, value in details.items():
        setattr(exc, key, value)
    if isinstance(exc, Unavailable | RateLimited) and not hasattr(exc, "retry_after_s"):
        exc.retry_after_s = 1.0
    return exc
