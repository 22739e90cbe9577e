"""Placing ToolGym replicas on a Ray cluster: one actor per replica, each a whole ToolGym server.

A replica is a Ray actor whose process runs a real server (uvicorn on a thread,
``toolgym.server.embedded.EmbeddedServer``) on the node's IP address, with its own sandbox
backend (the node's Docker engine when it answers, else the process backend) and its own
SQLite store unless the fleet shares one. Episodes never move between replicas: their state and
sandboxes live in that one process, which is why the entry point routes by the replica token
in the episode id (``toolgym.fleet.proxy``).

Spreading: the replicas go into one placement group of N small bundles. With N at most the
number of alive nodes the strategy is ``STRICT_SPREAD`` (one replica per node, so one Docker
engine each); with more replicas than nodes it is ``SPREAD`` (as even as Ray can, some nodes
holding two replicas that share their engine). A bundle asks for ``REPLICA_CPUS`` of a CPU
only: a replica's real load is its sandboxes, which Ray does not schedule, and a trainer's
own tasks on the same nodes must still fit.

Ray is imported only here (and only when a fleet is started): ``pip install toolgym[fleet]``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolgym.server.settings import Settings

__all__ = ["REPLICA_CPUS", "Placement", "Replica", "ReplicaInfo", "place_replicas", "replica_settings"]

log = logging.getLogger("toolgym.fleet")

REPLICA_CPUS = 0.1
"""CPU a replica reserves in Ray's accounting (see the module doc for why so little)."""


def _ray() -> Any:
    """The ``ray`` module, imported on first use; typed loosely since Ray's annotations are partial."""
    import ray

    return ray


@dataclass(frozen=True)
class ReplicaInfo:
    """What a started replica reports: where it listens and which process it is.

    ``replica`` is the token of its episode ids (``ep-<replica>-<random>``) and of its
    ``GET /v1/version``; ``pid`` is the actor's process, which holds the server and, with the
    process backend, its sandboxes.
    """

    index: int
    replica: str
    base_url: str
    pid: int
    node_id: str
    node_ip: str


def replica_settings(settings: Settings, index: int, *, shared_db: bool) -> Settings:
    """The settings of replica ``index``: the fleet's, with its own port, instance and (unless shared) store.

    The host is set by the replica to its node's address; the port is a free one there. A store
    of its own is ``<stem>-replica<index><suffix>`` next to the fleet's ``db_path`` (an absolute
    path, made on each node), since one SQLite file written by several servers is only safe
    when the operator asks for it (``--db``).
    """
    db_path = settings.db_path
    if not shared_db and db_path != ":memory:":
        path = Path(db_path).absolute()
        db_path = str(path.with_name(f"{path.stem}-replica{index}{path.suffix}"))
    return dataclasses.replace(settings, port=0, db_path=db_path, instance_id="")


class Replica:
    """The Ray actor of one replica: a ToolGym server running in the actor's own process.

    Ray builds it with ``ray.remote(Replica)``; the constructor returns once the server
    answers, so ``info`` is only ever asked of a serving replica.
    """

    def __init__(self, settings: Settings, index: int, log_level: str = "warning", host: str | None = None) -> None:
        from toolgym.server import create_app
        from toolgym.server.embedded import EmbeddedServer
        from toolgym.server.sandbox.image import ensure_image
        from toolgym.server.sandbox.select import docker_reachable

        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        ray = _ray()
        node_ip = str(ray.util.get_node_ip_address())
        mine = dataclasses.replace(settings, host=host or node_ip)
        if mine.backend in ("auto", "docker") and docker_reachable():
            ensure_image(mine.sandbox_image, say=log.info)  # this node's engine, as `toolgym serve` does
        if mine.db_path != ":memory:":
            Path(mine.db_path).parent.mkdir(parents=True, exist_ok=True)
        app = create_app(mine)
        self._server = EmbeddedServer(app, host=mine.host, port=0, log_level=log_level).start(timeout_s=120.0)
        self._info = ReplicaInfo(index=index, replica=app.state.manager.replica, base_url=self._server.base_url,
                                 pid=os.getpid(), node_id=ray.get_runtime_context().get_node_id(),
                                 node_ip=node_ip)

    def info(self) -> ReplicaInfo:
        """Where this replica serves, its token and its process."""
        return self._info

    def stop(self) -> None:
        """Run the server's shutdown (its sandboxes are removed) before Ray ends the actor."""
        self._server.stop(timeout_s=60.0)


@dataclass
class Placement:
    """The replicas of one fleet on a Ray cluster, with the handles that keep them alive."""

    infos: list[ReplicaInfo]
    actors: list[Any]
    group: Any
    strategy: str
    _probes: dict[int, Any] = field(default_factory=dict)
    _dead: set[int] = field(default_factory=set)

    def alive(self, timeout_s: float = 0.5) -> list[bool]:
        """Whether each replica's actor is alive by Ray's account: ``False`` only once Ray says it died.

        Each actor has at most one probe (``info``) in flight: a probe not answered yet counts
        as alive, since a slow answer is not a death (a replica that hangs is found by the entry
        point's HTTP health checks). A dead actor stays dead and is not probed again.
        """
        ray = _ray()
        for index, actor in enumerate(self.actors):
            if index not in self._dead and index not in self._probes:
                self._probes[index] = actor.info.remote()
        probes = dict(self._probes)
        if probes:
            ray.wait(list(probes.values()), num_returns=len(probes), timeout=timeout_s)
        for index, ref in probes.items():
            ready, _ = ray.wait([ref], timeout=0)
            if not ready:
                continue
            del self._probes[index]
            try:
                ray.get(ref, timeout=0)
            except ray.exceptions.ActorUnavailableError:
                pass  # unreachable for now (e.g. a network blip), not known dead
            except ray.exceptions.RayActorError:
                self._dead.add(index)
        return [index not in self._dead for index in range(len(self.actors))]

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Stop every replica's server (bounded), then end the actors and free the placement group."""
        from ray.util.placement_group import remove_placement_group

        ray = _ray()

        refs = [actor.stop.remote() for actor in self.actors]
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # already dead
                log.debug("replica actor already gone", exc_info=True)
        try:
            remove_placement_group(self.group)
        except Exception:
            log.debug("placement group already gone", exc_info=True)


def place_replicas(settings: Settings, replicas: int, *, shared_db: bool, log_level: str = "warning",
                   host: str | None = None, timeout_s: float = 180.0) -> Placement:
    """Start ``replicas`` ToolGym servers as Ray actors, spread over the nodes; Ray must be initialised.

    Each replica listens on ``host`` when given (``127.0.0.1`` for a cluster whose nodes all run
    on one machine), else on its node's IP address as Ray knows it; a non-loopback address
    needs API keys (or ``insecure_no_auth``), as for ``toolgym serve``.

    Returns once every replica serves. A replica whose start fails (or a group Ray cannot place
    within ``timeout_s``) raises, after the replicas already started are stopped.

    Raises:
        RuntimeError: the cluster could not place or start the replicas in time.
    """
    ray = _ray()
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    strategy = "STRICT_SPREAD" if replicas <= len(nodes) else "SPREAD"
    if strategy == "SPREAD":
        log.warning("%d replicas on %d nodes: some nodes hold two or more (sharing one Docker engine)",
                    replicas, len(nodes))
    group = placement_group([{"CPU": REPLICA_CPUS}] * replicas, strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        raise RuntimeError(f"Ray could not place {replicas} replicas ({strategy}) within {timeout_s:g} s")
    remote = ray.remote(Replica)
    actors = [
        remote.options(
            num_cpus=REPLICA_CPUS, max_restarts=0, max_concurrency=4,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=group,
                                                                 placement_group_bundle_index=i),
        ).remote(replica_settings(settings, i, shared_db=shared_db), i, log_level, host)
        for i in range(replicas)
    ]
    placement = Placement(infos=[], actors=actors, group=group, strategy=strategy)
    deadline = time.monotonic() + timeout_s
    try:
        for actor in actors:
            placement.infos.append(ray.get(actor.info.remote(), timeout=max(1.0, deadline - time.monotonic())))
    except BaseException:
        placement.shutdown(timeout_s=30.0)
        raise
    return placement
