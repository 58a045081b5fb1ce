"""Serve the catalog over JDBC/ODBC with Spark's own Thrift server (HiveServer2 protocol).

./spark-submit.sh thriftserver                 # catalog.thrift_host:thrift_port, 127.0.0.1:10000
./spark-submit.sh sql "SELECT count(*) FROM alerts"    # now answers through the server

Any HiveServer2 client connects to jdbc:hive2://127.0.0.1:10000/txwatch (beeline, DBeaver,
PyHive, a BI tool). The server keeps one Spark session warm, so a query costs what the
query costs, not a JVM's start. It registers tables that appear later (a batch job's) every
--refresh seconds. Ctrl-C (or SIGTERM) stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import signal
import socket
import sys
import time
from types import FrameType

from txwatch.catalog import open_catalog, register_tables, table_names
from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.errors import UserError, run_entry_point
from txwatch.sql_client import server_answers


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("thriftserver", lambda: run(argv))


def run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh thriftserver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    parser.add_argument("--port", type=int, help="port to listen on (default catalog.thrift_port)")
    parser.add_argument(
        "--refresh",
        type=float,
        default=30.0,
        help="seconds between registrations of new tables (default %(default)s)",
    )
    args = parser.parse_args(argv)
    conf = load_conf(args.conf)
    if args.port is not None:
        conf = dataclasses.replace(
            conf, catalog=dataclasses.replace(conf.catalog, thrift_port=args.port)
        )
    host, port = conf.catalog.thrift_host, conf.catalog.thrift_port
    authentication = conf.spark.options.get("spark.hadoop.hive.server2.authentication", "NONE")
    if not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback and (
        authentication.upper() == "NONE"
    ):
        raise UserError(
            f"catalog.thrift_host {host} is reachable from other machines, and the server "
            "would run any SQL they send with no authentication: set "
            "spark.hadoop.hive.server2.authentication (e.g. LDAP, docs/deploy.md) or listen on "
            "127.0.0.1"
        )
    if server_answers(host, port):
        raise UserError(
            f"something already listens on {host}:{port}: another Thrift server? "
            "(choose another with --port or catalog.thrift_port)"
        )
    # SIGTERM (kill, a service manager) stops the server as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    # Results go to clients a batch at a time, not collected whole in the driver first: a
    # SELECT * of a large table is the client's to page through, not the server's to hold.
    options = {**conf.spark.options, "spark.sql.thriftServer.incrementalCollect": "true"}
    conf = dataclasses.replace(conf, spark=dataclasses.replace(conf.spark, options=options))
    started = time.monotonic()
    spark = open_catalog(conf, "thriftserver")
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    server = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithContext(
        spark._jsparkSession.sqlContext()
    )
    try:
        _wait_until_listening(host, port)
        print(
            f"thriftserver: serving {len(table_names(spark, conf))} tables of {conf.lake_root} at "
            f"jdbc:hive2://{host}:{port}/{conf.catalog.database} "
            f"(ready in {time.monotonic() - started:.1f} s); Ctrl-C stops it",
            flush=True,
        )
        while True:
            time.sleep(args.refresh)
            if added := register_tables(spark, conf):
                print(f"thriftserver: registered {', '.join(added)}", flush=True)
    except KeyboardInterrupt:
        print("thriftserver: stopping", flush=True)
        return 0
    finally:
        # Best effort: on Ctrl-C the JVM got the signal too and may be stopping already.
        for stop in (server.stop, spark.stop):
            with contextlib.suppress(Exception):  # Py4J errors of a JVM that is gone
                stop()


def _wait_until_listening(host: str, port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not server_answers(host, port):
        if time.monotonic() > deadline:
            raise UserError(f"the Thrift server did not start listening on {host}:{port}")
        time.sleep(0.2)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
