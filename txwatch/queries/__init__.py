"""The streaming queries of the pipeline, one module each, and the runner that starts them.

``PIPELINE`` lists them all. An ``--available-now`` run starts every query whose ``after``
queries have finished (ingest, travel, the metrics queries and payment scoring
together, then alerts and enrich, then webhooks when a webhook is configured).
"""

from __future__ import annotations

from txwatch.queries import (
    alerts,
    enrich,
    ingest,
    metrics,
    payment_scoring,
    travel,
    webhooks,
)
from txwatch.queries.base import QuerySpec

PIPELINE: tuple[QuerySpec, ...] = (
    ingest.QUERY,
    travel.QUERY,
    metrics.WINDOWS_QUERY,
    metrics.POINTS_QUERY,
    payment_scoring.QUERY,
    alerts.QUERY,
    enrich.QUERY,
    webhooks.QUERY,
)
