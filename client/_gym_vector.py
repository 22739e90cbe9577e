"""Chat observations in gymnasium's shared memory, so ``AsyncVectorEnv`` works with its defaults.

``gymnasium.make_vec(id, vectorization_mode="async")`` builds ``AsyncVectorEnv(shared_memory=True)``:
each worker writes its observation into a buffer made by ``create_shared_memory`` for the
observation space, and the parent returns what ``read_from_shared_memory`` gave it once, at
construction. Those three functions are ``functools.singledispatch`` hooks; gymnasium only knows
its own spaces, so for a ``ChatObservation`` they raised and ``make_vec`` failed. We register
them for ``ChatObservation`` here. Why this and not the alternatives:

* ``vector_kwargs={"shared_memory": False}`` in the env spec: ``make_vec`` lets a spec's
  ``vector_kwargs`` replace the caller's outright (a user's ``autoreset_mode`` would be dropped)
  and passes them to ``SyncVectorEnv`` as well, which has no ``shared_memory`` parameter: the
  default ``sync`` mode would break.
* gymnasium's own spaces: chat messages are nested, variable-length JSON. ``Sequence`` and
  ``Graph`` refuse shared memory; ``Text`` has a fixed alphabet and length, and its reader
  builds a tuple of strings, so the one the parent keeps from construction never changes.

Each sub-env owns a fixed slot of ``ChatObservation.shared_memory_bytes``: an 8-byte length,
then the observation as UTF-8 JSON (lossless: observations arrive as JSON). The parent reads
through ``SharedChatBatch``, a live view that decodes the slots when asked; ``AsyncVectorEnv``
deep-copies it (``copy=True``, its default) into a plain tuple of dicts, the same value the sync
vector env returns (with ``copy=False`` the view itself comes back, rewritten by the next step).
An observation that does not fit fails that step with ``PayloadTooLarge`` (gymnasium then shuts
that worker down, and its env closes its episode), naming both ways out: a larger
``shared_memory_bytes``, or ``vector_kwargs={"shared_memory": False}``, which sends
observations through the worker pipes instead and has no size limit.

``close_episodes_on_sigterm`` covers the other way an async vector env ends: ``close(terminate=
True)``, a ``close`` that timed out, and garbage collection all ``terminate()`` the workers, and a
SIGTERM would kill a worker before its env could close its remote episode, leaving it (and its
sandbox) live on the server until the idle timeout. The worker unwinds instead, for at most
``TERMINATE_GRACE_S``.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import threading
from collections.abc import Iterator, Sequence
from ctypes import c_uint8
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, NoReturn, overload

import numpy as np
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

from toolgym.errors import PayloadTooLarge

if TYPE_CHECKING:
    from toolgym.client.gym import ChatObservation

__all__ = ["SharedChatBatch", "close_episodes_on_sigterm", "register_shared_memory"]

_HEADER = 8  # little-endian uint64: the payload's length in bytes


def _slots(shared: Any, space: ChatObservation) -> np.ndarray:
    """The buffer as a ``(num_envs, header + capacity)`` uint8 array sharing its memory."""
    return np.frombuffer(shared, dtype=np.uint8).reshape(-1, _HEADER + space.shared_memory_bytes)


class SharedChatBatch(Sequence[dict[str, Any]]):
    """The observations of every sub-env, decoded from shared memory when read.

    ``AsyncVectorEnv`` keeps this one object for its whole life, so it must be a view, not a
    snapshot (see the module docstring). ``copy.deepcopy`` gives a tuple of fresh dicts.
    A slot no worker has written yet reads as an observation with no messages.
    """

    def __init__(self, slots: np.ndarray) -> None:
        self._slots = slots

    def __len__(self) -> int:
        return int(self._slots.shape[0])

    def _decode(self, index: int) -> dict[str, Any]:
        slot = self._slots[index]
        size = int.from_bytes(slot[:_HEADER].tobytes(), "little")
        if size == 0:
            return {"messages": []}
        value: dict[str, Any] = json.loads(slot[_HEADER:_HEADER + size].tobytes().decode("utf-8"))
        return value

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[dict[str, Any], ...]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | tuple[dict[str, Any], ...]:
        """One sub-env's observation, or a tuple of them for a slice."""
        if isinstance(index, slice):
            return tuple(self._decode(i) for i in range(len(self))[index])
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._decode(index % len(self))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._decode(i) for i in range(len(self)))

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[dict[str, Any], ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return f"SharedChatBatch({list(self)!r})"


def _create(space: ChatObservation, n: int = 1, ctx: ModuleType = multiprocessing) -> Any:
    # lock=False: a slot has one writer (its worker), read by the parent only after that
    # worker answered on its pipe, the same discipline gymnasium's own buffers rely on.
    return ctx.Array(c_uint8, n * (_HEADER + space.shared_memory_bytes), lock=False)


def _read(space: ChatObservation, shared_memory: Any, n: int = 1) -> SharedChatBatch:
    return SharedChatBatch(_slots(shared_memory, space))


def _write(space: ChatObservation, index: int, value: dict[str, Any], shared_memory: Any) -> None:
    payload = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(payload) > space.shared_memory_bytes:
        raise PayloadTooLarge(
            f"an observation of {len(payload)} bytes does not fit the {space.shared_memory_bytes}-byte "
            "shared-memory slot of AsyncVectorEnv: pass a larger shared_memory_bytes to the env, "
            'or vector_kwargs={"shared_memory": False}')
    slot = _slots(shared_memory, space)[index]
    slot[_HEADER:_HEADER + len(payload)] = np.frombuffer(payload, dtype=np.uint8)
    slot[:_HEADER] = np.frombuffer(len(payload).to_bytes(_HEADER, "little"), dtype=np.uint8)


def register_shared_memory(space_type: type[ChatObservation]) -> None:
    """Teach gymnasium's shared-memory hooks the chat observation space (idempotent)."""
    create_shared_memory.register(space_type)(_create)
    # gymnasium annotates the reader's result with its own types (arrays, tuples, dicts); a
    # view is what AsyncVectorEnv needs from it (see the module docstring).
    read_from_shared_memory.register(space_type)(_read)  # type: ignore[arg-type]
    write_to_shared_memory.register(space_type)(_write)


TERMINATE_GRACE_S = 5
"""How long a terminated worker may spend closing its episode (a dead server would otherwise
hold ``close(terminate=True)`` through the client's timeouts and retries)."""


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once, as before
    if hasattr(signal, "alarm"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(TERMINATE_GRACE_S)  # then SIGALRM's default action ends the process
    raise SystemExit(128 + signum)


def close_episodes_on_sigterm() -> None:
    """In a child process, make SIGTERM unwind (``SystemExit``) instead of killing outright.

    gymnasium's async worker closes its env in a ``finally`` clause, so unwinding is enough for
    ``RemoteEnv.close`` to close the remote episode before the worker exits; the parent joins
    its workers, so that close is done when ``AsyncVectorEnv.close`` returns. Only where SIGTERM
    still has its default action, in the main thread of a ``multiprocessing`` child: a handler
    someone else set is left alone, and the user's own (parent) process is never touched.
    """
    if multiprocessing.parent_process() is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
