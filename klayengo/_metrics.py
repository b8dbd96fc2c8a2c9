"""PLACEHOLDER: events -> Prometheus series (replaced by the metrics issue)."""

from __future__ import annotations

from typing import Any

from ._policies import MetricsPolicy
from ._transports._context import LayerContext

__all__ = ["create_metrics"]


def create_metrics(context: LayerContext, metrics: Any) -> None:
    """Validate ``metrics=`` and attach the client's metrics sink to ``context``."""
    if isinstance(metrics, bool) or metrics is None or isinstance(metrics, MetricsPolicy):
        return
    from prometheus_client import CollectorRegistry

    if isinstance(metrics, CollectorRegistry):
        return
    raise TypeError(
        f"metrics must be a bool, a CollectorRegistry or a MetricsPolicy, got {metrics!r}"
    )
