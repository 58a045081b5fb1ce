"""The catalog and the ways into it: `sql` in a Spark of its own, the Thrift server over
JDBC/ODBC (a Python HiveServer2 client), and `sql` sending its queries to a running server.
Both `sql` paths give the same answer, computed here independently."""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyhive import hive

from tests.conftest import REPO, _free_port
from txwatch.infra import columns, tables
from txwatch.lake import read_table
from txwatch.sql_client import server_answers

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def catalog_conf(model_lake, tmp_path_factory) -> tuple[Path, int, dict[str, str]]:
    """A config naming a free Thrift port, and the environment pointing jobs at the lake."""
    port = _free_port()
    path = tmp_path_factory.mktemp("catalog") / "catalog.yaml"
    path.write_text(
        f"extends: {REPO / 'conf' / 'local.yaml'}\n"
        f"catalog:\n  thrift_port: {port}\n"
        'spark:\n  options:\n    spark.driver.memory: 1g\n    spark.ui.enabled: "false"\n'
    )
    env = {**os.environ, "TXWATCH_LAKE_ROOT": model_lake.conf.lake_root}
    env.pop("TXWATCH_SUBMITTED", None)
    return path, port, env


def sql(catalog_conf, *args: str) -> subprocess.CompletedProcess[str]:
    conf_path, _, env = catalog_conf
    return subprocess.run(
        [str(REPO / "spark-submit.sh"), "sql", "--conf", str(conf_path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def expected_by_severity(spark, model_lake) -> list[list[str]]:
    """sql/alerts_by_severity.sql's rows, computed from the collected table, as CSV text."""
    scores: dict[tuple[str, str], list[float]] = {}
    for a in read_table(spark, model_lake.conf, tables.ALERTS).collect():
        scores.setdefault((a.alert_type, a.severity), []).append(a.score)
    return [
        [kind, severity, str(len(v)), str(round(sum(v) / len(v), 1))]
        for (kind, severity), v in sorted(scores.items())
    ]


# Timestamps, a map and a double: the values the two paths deliver differently.
PARITY_QUERY = (
    "SELECT alert_id, event_time, detected_at, evidence, score FROM alerts ORDER BY alert_id"
)


@pytest.fixture(scope="module")
def own_session(catalog_conf) -> dict[str, str]:
    """What `sql` prints with no server running (it opens the catalog itself)."""
    by_severity = sql(catalog_conf, "-f", "sql/alerts_by_severity.sql", "--format", "csv")
    assert by_severity.returncode == 0, by_severity.stderr
    by_name = sql(
        catalog_conf,
        "--format",
        "json",
        "DESCRIBE HISTORY alerts; DESCRIBE TABLE alerts; SHOW TBLPROPERTIES alerts",
    )
    assert by_name.returncode == 0, by_name.stderr
    parity = sql(catalog_conf, "--format", "json", PARITY_QUERY)
    assert parity.returncode == 0, parity.stderr
    return {"by_severity": by_severity.stdout, "by_name": by_name.stdout, "parity": parity.stdout}


def test_sql_without_a_server_registers_the_tables_with_their_comments(
    own_session, expected_by_severity, model_lake
):
    got = list(csv.reader(io.StringIO(own_session["by_severity"])))
    assert got[0] == ["alert_type", "severity", "alerts", "avg_score"]
    assert [r[:3] for r in got[1:]] == [r[:3] for r in expected_by_severity]
    assert all(
        abs(float(a[3]) - float(b[3])) <= 0.05
        for a, b in zip(got[1:], expected_by_severity, strict=True)
    )

    # By name: a table's history, its columns with their comments, what it is.
    rows = [json.loads(line) for line in own_session["by_name"].splitlines()]
    history = [r for r in rows if "operation" in r]
    assert history and history[-1]["version"] == 0
    described = {r["col_name"]: r["comment"] for r in rows if "col_name" in r}
    assert described["card_token"] == columns.comment(tables.ALERTS, "card_token")
    properties = {r["key"]: r["value"] for r in rows if "key" in r}
    assert properties["txwatch.written_by"].startswith("stream: query alerts")
    assert Path(model_lake.conf.lake_root, "_catalog", "metastore_db").is_dir()

    # Timestamps in UTC whatever the local zone, maps as JSON.
    first = json.loads(own_session["parity"].splitlines()[0])
    assert first["event_time"][:4] == "2026" and "T" not in first["event_time"]
    assert isinstance(json.loads(first["evidence"]), dict)


class Server:
    """The Thrift server's process and its output lines, read as they come (a thread)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout_s: float) -> str:
        """The first line holding ``text``; fails with what was printed if none comes."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in:\n{''.join(self.seen)}")


@pytest.fixture(scope="module")
def thrift_server(catalog_conf, own_session) -> Iterator[Server]:
    # After own_session: the server holds the embedded catalog while it runs.
    conf_path, port, env = catalog_conf
    process = subprocess.Popen(
        [str(REPO / "spark-submit.sh"), "thriftserver", "--conf", str(conf_path), "--refresh", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    server = Server(process)
    try:
        ready = server.wait_for("thriftserver: serving", 180)
        assert f"jdbc:hive2://127.0.0.1:{port}/txwatch" in ready
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_the_thrift_server_answers_a_python_hive_client(
    thrift_server, catalog_conf, spark, model_lake
):
    _, port, _ = catalog_conf
    connection = hive.connect(host="127.0.0.1", port=port, database="txwatch", username="test")
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT alert_type, count(*) AS n FROM alerts GROUP BY alert_type")
        got = dict(cursor.fetchall())
    finally:
        connection.close()
    alerts = read_table(spark, model_lake.conf, tables.ALERTS).collect()
    assert got == dict(Counter(a.alert_type for a in alerts))


def test_sql_sends_its_queries_to_the_running_server(
    thrift_server, catalog_conf, expected_by_severity, own_session, tmp_path
):
    started = time.monotonic()
    done = sql(catalog_conf, "-f", "sql/alerts_by_severity.sql", "--format", "csv")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    got = list(csv.reader(io.StringIO(done.stdout)))
    assert [r[:3] for r in got[1:]] == [r[:3] for r in expected_by_severity]
    done = sql(catalog_conf, "SELECT count(*) AS alerts FROM alerts")
    assert "via the Thrift server" in done.stderr, done.stderr
    # The same answer as a session of its own gives, to the character.
    done = sql(catalog_conf, "--format", "json", PARITY_QUERY)
    assert done.returncode == 0, done.stderr
    assert done.stdout == own_session["parity"]
    print(f"sql -f through the server: {elapsed:.2f} s")

    # An unknown table: the error lists the tables there are.
    done = sql(catalog_conf, "SELECT * FROM alertz")
    assert done.returncode == 2
    assert (
        "no table or view `alertz` in the catalog; tables: account_clusters, alerts," in done.stderr
    )

    # Another lake (another config, TXWATCH_LAKE_ROOT): not the server's to answer.
    conf_path, _, env = catalog_conf
    other = subprocess.run(
        [str(REPO / "spark-submit.sh"), "sql", "--conf", str(conf_path), "SELECT 1 AS one"],
        env={**env, "TXWATCH_LAKE_ROOT": str(tmp_path / "other-lake")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert other.returncode == 0, other.stderr
    assert (
        "serves another lake" in other.stderr and "via a Spark session of its own" in other.stderr
    )

    # The embedded catalog is the server's while it runs: a session of its own is refused
    # at once, with the way out.
    done = sql(catalog_conf, "--no-server", "SELECT 1")
    assert done.returncode == 2
    assert "open in another Spark process" in done.stderr
    assert "Another instance of Derby" not in done.stderr


def test_the_server_registers_tables_again_and_stops_on_ctrl_c(
    thrift_server, catalog_conf, spark, model_lake
):
    # A registration dropped (by a client, or a table the catalog has not seen yet) comes
    # back at the next refresh; the table is external, so dropping it kept its data.
    _, port, _ = catalog_conf
    connection = hive.connect(host="127.0.0.1", port=port, database="txwatch", username="test")
    try:
        connection.cursor().execute("DROP TABLE ground_truth")
    finally:
        connection.close()
    thrift_server.wait_for("thriftserver: registered ground_truth", 60)
    truth = read_table(spark, model_lake.conf, tables.GROUND_TRUTH)
    assert truth.count() == len(model_lake.sim.truth)

    # Ctrl-C in the terminal: SIGINT to the process group (the JVM and its Python driver).
    os.killpg(thrift_server.process.pid, signal.SIGINT)
    thrift_server.wait_for("thriftserver: stopping", 60)
    thrift_server.process.wait(timeout=60)
    assert not server_answers("127.0.0.1", port)
