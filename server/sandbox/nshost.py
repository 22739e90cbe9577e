"""The namespace tier's streams: one framed stream per host container, cut into one agent ``Channel`` per episode.

The frames are ``nsd.py``'s (its module doc): a header line ``<kind> <episode> <size>`` and
``size`` bytes. A reader thread per host container splits what the supervisor writes into the
episodes' channels, so ``AgentSandbox`` drives an episode exactly as it drives a container.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from toolgym.server.sandbox.agent_client import Channel
from toolgym.server.sandbox.docker import _AttachChannel

__all__ = ["EpisodeChannel", "Host"]

log = logging.getLogger(__name__)


class EpisodeChannel(Channel):
    """One episode's agent stream, cut out of its host container's framed stream.

    ``anomaly`` records why the episode's host should be recycled (its agent missed a deadline
    or its stream ended); ``exit`` is the supervisor's ``X`` report once the episode is gone.
    """

    def __init__(self, host: Host, ep: int) -> None:
        self._host = host
        self.ep = ep
        self._buf = bytearray()
        self._eof = False
        self._cond = threading.Condition()
        self.exit: dict[str, Any] | None = None
        self.anomaly: str | None = None

    def feed(self, data: bytes) -> None:
        """Bytes from the agent (the reader thread); empty means its stream ended."""
        with self._cond:
            if data:
                self._buf += data
            else:
                self._eof = True
            self._cond.notify_all()

    def ended(self, info: dict[str, Any]) -> None:
        """The supervisor's word that the episode's namespace set is gone (its status and any anomaly)."""
        with self._cond:
            self.exit = info
            self._eof = True
            self._cond.notify_all()

    def send(self, data: bytes) -> None:
        """Write to the agent's stdin, as one ``D`` frame on the host's stream."""
        self._host.send("D", self.ep, data)

    def read_chunk(self, timeout_s: float) -> bytes:
        """What the agent wrote since the last call; a timeout or the end of its stream marks an anomaly."""
        with self._cond:
            if not self._buf and not self._eof and not self._cond.wait_for(
                    lambda: bool(self._buf) or self._eof, timeout=max(0.0, timeout_s)):
                self.anomaly = self.anomaly or "the agent stopped answering"
                raise TimeoutError
            if self._buf:
                data = bytes(self._buf)
                self._buf.clear()
                return data
            self.anomaly = self.anomaly or "the agent's stream ended"
            return b""

    def close(self) -> None:
        """Nothing to release here: the episode ends with its host's ``C`` frame (``destroy``)."""

    def diagnostics(self) -> str:
        """The supervisor's exit report, when there is one (for error messages)."""
        return "" if self.exit is None else f"episode exit: {self.exit}"

    def wait_exit(self, timeout_s: float) -> dict[str, Any] | None:
        """The ``X`` report, waiting up to ``timeout_s`` for it; None if it did not come."""
        with self._cond:
            self._cond.wait_for(lambda: self.exit is not None, timeout=timeout_s)
            return self.exit


class Host:
    """One host container: its framed stream, its live episodes and its life counters.

    ``opened`` counts every episode it ever took (the recycling bound); ``retired`` says why it
    takes no more; ``dead`` is set when its stream ends, after which ``on_gone`` is called once.
    """

    def __init__(self, container_id: str, name: str, sock: Any, on_gone: Callable[[Host, str], None]) -> None:
        self._on_gone = on_gone
        self.id = container_id
        self.name = name
        self.channel = _AttachChannel(sock)
        self.episodes: dict[int, EpisodeChannel] = {}
        self.opened = 0
        self.retired: str | None = None
        self.dead = False
        self.removed = False
        self._send_lock = threading.Lock()
        self._buf = bytearray()
        self.hello = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"toolgym-nsd-{name[-8:]}", daemon=True)
        self._reader.start()

    def send(self, kind: str, ep: int, payload: bytes = b"") -> None:
        """Write one frame; whole frames only, as every episode's thread shares the stream."""
        with self._send_lock:
            self.channel.send(f"{kind} {ep} {len(payload)}\n".encode() + payload)

    def _read(self) -> None:
        try:
            while True:
                try:
                    chunk = self.channel.read_chunk(3600.0)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                self._buf += chunk
                self._frames()
        except (OSError, ValueError) as exc:
            if not self.removed:
                log.warning("namespace host %s: stream failed: %s", self.name, exc)
        self.dead = True
        self._on_gone(self, "the host container's stream ended")

    def _frames(self) -> None:
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                return
            kind, ep_text, size_text = self._buf[:nl].decode().split()
            ep, size = int(ep_text), int(size_text)
            if len(self._buf) < nl + 1 + size:
                return
            payload = bytes(self._buf[nl + 1:nl + 1 + size])
            del self._buf[:nl + 1 + size]
            if kind == "H":
                self.hello.set()
                continue
            episode = self.episodes.get(ep)
            if episode is None:
                continue
            if kind == "D":
                episode.feed(payload)
            elif kind == "X":
                episode.ended(json.loads(payload))
