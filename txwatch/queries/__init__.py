"""The streaming queries of the pipeline, one module each, and the runner that starts them.

``PIPELINE`` lists them all. An ``--available-now`` run starts every query whose ``after``
queries have finished (ingest, travel, the metrics queries, model scoring and fraud
similarity together, then alerts and enrich).
"""

from __future__ import annotations

from txwatch.queries import (
    alerts,
    enrich,
    fraud_similarity,
    ingest,
    metrics,
    model_scoring,
    travel,
)
from txwatch.queries.base import QuerySpec

PIPELINE: tuple[QuerySpec, ...] = (
    ingest.QUERY,
    travel.QUERY,
    metrics.WINDOWS_QUERY,
    metrics.POINTS_QUERY,
    model_scoring.QUERY,
    fraud_similarity.QUERY,
    alerts.QUERY,
    enrich.QUERY,
)
