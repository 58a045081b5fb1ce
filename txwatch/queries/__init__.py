"""The streaming queries of the pipeline, one module each, and the runner that starts them.

``PIPELINE`` lists them in the order an ``--available-now`` run drains them: a query that
reads another's output comes after it.
"""

from __future__ import annotations

from txwatch.queries import alerts, enrich, ingest, travel
from txwatch.queries.base import QuerySpec

PIPELINE: tuple[QuerySpec, ...] = (ingest.QUERY, travel.QUERY, alerts.QUERY, enrich.QUERY)
