"""The streaming queries of the pipeline, one module each, and the runner that starts them.

``PIPELINE`` lists them all. An ``--available-now`` run starts every query whose ``after``
queries have finished (ingest and travel together, then alerts and enrich).
"""

from __future__ import annotations

from txwatch.queries import alerts, enrich, ingest, travel
from txwatch.queries.base import QuerySpec

PIPELINE: tuple[QuerySpec, ...] = (ingest.QUERY, travel.QUERY, alerts.QUERY, enrich.QUERY)
