from __future__ import annotations

from datetime import datetime

import pytest

from tests.conftest import REPO
from tests.webhook_server import WebhookServer
from txwatch.infra.config import ConfigError, load_conf
from txwatch.infra.webhooks import SLACK, TEAMS, RateLimiter, check_url, message, post

ALERT = {
    "alert_id": "a1",
    "alert_type": "impossible_travel",
    "severity": "high",
    "reason": "2,100 km in 30 min (1,167 m/s)",
    "event_time": datetime(2026, 1, 5, 12, 0, 5),
    "transaction_id": "t-9",
    "card_last4": "1111",
    "amount": 42.5,
    "currency": "EUR",
}


def test_slack_and_teams_bodies_carry_every_alert_in_one_line():
    slack = message(SLACK, [ALERT, {**ALERT, "alert_id": "a2"}])
    assert slack["text"].startswith("*txwatch: 2 new alerts*\n• [HIGH] impossible_travel at ")
    assert "2026-01-05 12:00:05 UTC (transaction t-9, card ****1111, 42.50 EUR)" in slack["text"]
    assert "(alert a1)" in slack["text"] and "(alert a2)" in slack["text"]
    teams = message(TEAMS, [ALERT])
    assert teams["@type"] == "MessageCard" and teams["summary"] == "txwatch: 1 new alert"
    assert teams["text"].startswith("[HIGH] impossible_travel")


def test_post_retries_with_a_doubling_backoff_and_reports_the_last_error():
    waits: list[float] = []
    with WebhookServer() as server:
        server.status = 503
        result = post(server.url("/hook"), {"text": "x"}, 2.0, 3, 0.5, sleep=waits.append)
        assert (result.delivered, result.attempts, result.error) == (False, 3, "HTTP 503")
        assert waits == [0.5, 1.0] and server.requests == 3
        server.status = 200
        result = post(server.url("/hook"), {"text": "y"}, 2.0, 3, 0.5, sleep=waits.append)
        assert (result.delivered, result.attempts) == (True, 1)
        assert server.received == [("/hook", {"text": "y"})]


def test_post_to_a_closed_port_is_not_delivered_and_does_not_raise():
    with WebhookServer() as server:
        url = server.url("/hook")
    result = post(url, {"text": "x"}, 1.0, 2, 0.0, sleep=lambda s: None)
    assert not result.delivered and result.attempts == 2 and result.error


def test_rate_limiter_allows_so_many_messages_in_any_minute():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.allowed("ops") == 2
    limiter.record("ops")
    now[0] = 30.0
    limiter.record("ops")
    assert limiter.allowed("ops") == 0 and limiter.allowed("other") == 2
    now[0] = 60.5  # the first message is a minute old
    assert limiter.allowed("ops") == 1


def test_slack_text_escapes_its_markup():
    text = message(SLACK, [{**ALERT, "reason": "<!channel> & <http://x|y>"}])["text"]
    assert "&lt;!channel&gt; &amp; &lt;http://x|y&gt;" in text and "<!channel>" not in text


@pytest.mark.parametrize(
    "url",
    ["hooks.slack.com/services/T/B/SECRET", "file:///etc/passwd", "https://", "http://h:99999/x"],
)
def test_a_url_that_cannot_be_a_webhook_is_refused_without_repeating_it(url, tmp_path):
    assert check_url(url) is not None and "SECRET" not in check_url(url)
    path = tmp_path / "hooks.yaml"
    path.write_text(
        f"extends: {REPO / 'conf' / 'local.yaml'}\nwebhooks:\n  slack: {{ops: '{url}'}}\n"
    )
    with pytest.raises(ConfigError, match="the webhook 'ops' cannot be used") as err:
        load_conf(path)
    assert url not in str(err.value)
    # and post() never raises on it either
    assert not post(url, {"text": "x"}, 1.0, 1, 0.0).delivered
