"""Mistakes a user makes get one line on stderr with the fix, exit 2, and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from txwatch.infra.errors import UserError
from txwatch.queries.base import RunContext
from txwatch.queries.runner import describe_failure


def run_job(job: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    environment.pop("TXWATCH_TOKEN_KEY", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", f"jobs.{job}", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_token_key(tmp_path: Path):
    result = run_job("stream", "--available-now")
    assert_one_line_error(result, "stream:", "TXWATCH_TOKEN_KEY is not set", "export")


def test_unknown_conf_key_suggests_the_nearest(tmp_path: Path):
    conf = tmp_path / "typo.yaml"
    conf.write_text(f"extends: {REPO / 'conf' / 'local.yaml'}\nstream:\n  trigger_intervall: 5s\n")
    result = run_job("stream", "--conf", str(conf), env={"TXWATCH_TOKEN_KEY": "k"})
    assert_one_line_error(result, "trigger_intervall", "did you mean trigger_interval?")


def test_missing_conf_file():
    result = run_job("evaluate", "--conf", "conf/nope.yaml")
    assert_one_line_error(result, "evaluate:", "config file not found: conf/nope.yaml", "--conf")


def test_bad_duration_in_conf(tmp_path: Path):
    conf = tmp_path / "bad.yaml"
    conf.write_text(f"extends: {REPO / 'conf' / 'local.yaml'}\nstream:\n  join_before: soon\n")
    result = run_job("stream", "--conf", str(conf), env={"TXWATCH_TOKEN_KEY": "k"})
    assert_one_line_error(result, "conf.stream.join_before", "'soon' is not a duration")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            RuntimeError(
                "org.apache.kafka.common.errors.TimeoutException: Timeout of 60000ms expired "
                "before the position for partition transactions-0 could be determined\n\tat ..."
            ),
            'query "ingest" failed: org.apache.kafka.common.errors.TimeoutException',
        ),
        (RuntimeError("[DELTA_SCHEMA_CHANGED] schema changed"), 'query "ingest" failed: [DELTA'),
    ],
)
def test_query_failure_names_the_query_in_one_line(spark, conf, error, expected):
    ctx = RunContext(spark, conf, available_now=False)
    failure = describe_failure("ingest", error, ctx)
    assert isinstance(failure, UserError) and failure.exit_code == 1
    message = str(failure)
    assert "\n" not in message and message.startswith(expected)
    if "Timeout" in expected:
        assert conf.kafka.bootstrap_servers in message and "resumes" in message
    else:
        assert conf.checkpoint_path("ingest") in message
