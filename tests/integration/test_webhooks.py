"""The webhooks query posts new alerts to Slack- and Teams-style webhooks (a local HTTP
server here): a webhook that is down stops nothing and loses nothing, and what it missed is
sent once it is back, each alert once."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pyspark.sql.functions as F
import pytest

from tests.webhook_server import WebhookServer
from txwatch.infra import tables
from txwatch.infra.tables import ensure_tables
from txwatch.lake import read_table
from txwatch.queries import webhooks
from txwatch.queries.base import RunContext
from txwatch.queries.runner import run_available_now
from udfs.alerts import ALERT_SCHEMA

T0 = datetime(2026, 1, 5, 12, 0)


def alert(i: int, severity: str, detected_at: datetime | None = None) -> tuple:
    return (
        f"alert-{i}", "impossible_travel", 0.9, severity, f"reason {i}", T0 + timedelta(minutes=i),
        detected_at or datetime.now(UTC), f"t-{i}", "u_0123456789abcdef", "tok", "4242",
        "d_0123456789abcdef", "Cafe", 10.0 + i, "EUR", 48.85, 2.35, {"implied_speed_mps": 900.0},
    )  # fmt: skip


def ids_received(server: WebhookServer, path: str) -> list[str]:
    """Every alert id the server accepted on ``path``, in order, repeats included."""
    ids = []
    for got_path, body in server.received:
        if got_path == path:
            text = body.get("text", "")
            ids += re.findall(r"\(alert (alert-\d+)\)", text)
    return ids


@pytest.fixture
def hook_conf(conf):
    def with_server(server: WebhookServer):
        hooks = dataclasses.replace(
            conf.webhooks,
            slack={"ops": server.url("/slack")},
            teams={"risk": server.url("/teams")},
            min_severity="medium",
            trigger_interval="1 second",
            max_alerts_per_message=3,
            max_messages_per_minute=100,
            timeout="2 seconds",
            attempts=2,
            backoff="0.1 seconds",
        )
        return dataclasses.replace(conf, webhooks=hooks)

    return with_server


def test_a_webhook_that_is_down_loses_nothing_and_gets_each_alert_once_when_back(spark, hook_conf):
    with WebhookServer() as server:
        conf = hook_conf(server)
        ctx = RunContext(spark, conf, available_now=True)
        ensure_tables(spark, conf)
        alerts_path = conf.table_path(tables.ALERTS)

        def add_alerts(rows):
            spark.createDataFrame(rows, ALERT_SCHEMA).write.format("delta").mode("append").save(
                alerts_path
            )

        def run_once():
            webhooks._DELIVERERS.clear()  # as a restarted job: pending is read back
            run_available_now(ctx, [webhooks.QUERY])

        severities = ["high", "medium", "low", "high", "medium"]
        # Alerts of the lake's history (detected before this job started) are not posted.
        history = webhooks.JOB_STARTED - timedelta(days=1)
        add_alerts([alert(90 + i, "high", detected_at=history) for i in range(3)])
        add_alerts([alert(i, s) for i, s in enumerate(severities)])

        server.status = 503  # down: the run ends normally, nothing is delivered
        run_once()
        # 2 targets x 2 attempts in the micro-batch, then 1 attempt each at the end of the
        # run (a target that just failed gets one)
        assert server.received == [] and server.requests == 2 * 2 + 2
        deliveries = read_table(spark, conf, tables.WEBHOOK_DELIVERIES)
        pending = deliveries.filter(F.col("status") == "pending")
        assert pending.count() == 2 * 4  # every target, every alert but the low one
        assert pending.filter(F.col("error").contains("HTTP 503")).count() == 8
        assert read_table(spark, conf, tables.ALERTS).count() == 3 + 5

        server.status = 200  # back: no new alert, what was missed goes out
        run_once()
        expected = ["alert-0", "alert-1", "alert-3", "alert-4"]
        assert ids_received(server, "/slack") == expected
        teams = [body for path, body in server.received if path == "/teams"]
        assert [b["@type"] for b in teams] == ["MessageCard", "MessageCard"]  # 3 + 1 alerts
        assert len(re.findall(r"\(alert alert-\d+\)", "".join(b["text"] for b in teams))) == 4

        add_alerts([alert(5, "high"), alert(6, "low")])
        run_once()
        run_once()  # nothing new, nothing pending: nothing sent
        assert ids_received(server, "/slack") == [*expected, "alert-5"]
        sent = read_table(spark, conf, tables.WEBHOOK_DELIVERIES).filter("status = 'sent'")
        assert sent.count() == 2 * 5
        assert sent.select("target", "alert_id").distinct().count() == 2 * 5


def test_a_replayed_batch_whose_outcome_is_recorded_is_not_sent_again(spark, hook_conf):
    with WebhookServer() as server:
        conf = hook_conf(server)
        ensure_tables(spark, conf)
        sender = webhooks.Deliverer(spark, conf)
        sender.deliver([dict(zip(ALERT_SCHEMA.names, alert(1, "high"), strict=True))], 0)
        assert len(server.received) == 2  # one message per target
        again = webhooks.Deliverer(spark, conf)  # after a restart, batch 0 comes again
        again.deliver([dict(zip(ALERT_SCHEMA.names, alert(1, "high"), strict=True))], 0)
        assert len(server.received) == 2


def test_the_query_runs_only_when_a_webhook_is_configured(conf):
    assert not webhooks.enabled(conf)
    hooks = dataclasses.replace(conf.webhooks, teams={"risk": "http://127.0.0.1:1/x"})
    assert webhooks.enabled(dataclasses.replace(conf, webhooks=hooks))
