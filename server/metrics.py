"""Prometheus metrics, one registry per app (so several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Every metric the server exports, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.episodes_started = Counter("toolgym_episodes_started", "Episodes reset", ["env_id"], registry=r)
        self.episodes_finished = Counter(
            "toolgym_episodes_finished", "Episodes that ended, by reason", ["env_id", "reason"], registry=r
        )
        self.steps = Counter("toolgym_steps", "Steps served, by info status", ["env_id", "status"], registry=r)
        self.step_seconds = Histogram(
            "toolgym_step_seconds", "Step latency inside the server", ["env_id"], buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reset_seconds = Histogram(
            "toolgym_reset_seconds", "Reset latency inside the server", ["env_id"], buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.episode_return = Histogram(
            "toolgym_episode_return", "Sum of rewards of finished episodes", ["env_id"],
            buckets=(-1, -0.5, 0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5), registry=r,
        )
        self.sandbox_failures = Counter(
            "toolgym_sandbox_failures", "Sandboxes that failed during a step", ["env_id"], registry=r
        )
        self.live_episodes = Gauge("toolgym_live_episodes", "Open episodes", registry=r)
        self.warm_sandboxes = Gauge("toolgym_warm_sandboxes", "Sandboxes ready in the warm pool", registry=r)
        self.warm_pool_target = Gauge(
            "toolgym_warm_pool_target", "Ready sandboxes the warm pool aims at (demand, between its bounds)",
            registry=r,
        )
        self.teardown_backlog = Gauge(
            "toolgym_teardown_backlog", "Sandboxes of ended episodes queued or being removed", registry=r
        )
        self.sandboxes_removed = Gauge(
            "toolgym_teardown_removed", "Sandboxes removed by the background teardown since start", registry=r
        )
        self.teardown_failures = Gauge(
            "toolgym_teardown_failed", "Background removals that failed (the start-up sweep takes them)", registry=r
        )
        self.store_backlog = Gauge("toolgym_store_backlog", "Writes queued for the store's writer", registry=r)
        self.store_commit_writes = Histogram(
            "toolgym_store_commit_writes", "Writes per group commit", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.store_commit_seconds = Histogram(
            "toolgym_store_commit_seconds", "Duration of one group commit (fsync included)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.http_errors = Counter("toolgym_http_errors", "Error responses, by code", ["code"], registry=r)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
