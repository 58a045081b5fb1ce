"""The SQL catalog: every Delta table under ``lake_root`` registered by name.

Analysts, the sql job, the Thrift server and the notebooks query ``alerts``, not a path.
The tables are registered in Spark's Hive metastore (``conf.catalog``): an embedded Derby
database in ``<lake_root>/_catalog`` on a laptop, a cluster's shared metastore otherwise.
A registration is a name and a location; the schema with its column comments, the
description and the table properties live in the Delta log, where ``txwatch.infra.tables``
wrote them, so other engines reading the lake see them too.

The stream never opens the catalog: it writes by path, and Derby lets one process open
the embedded metastore at a time (the Thrift server, a sql run or a notebook). Whoever
opens it registers what is missing (``register_tables``): a table created after the
last registration appears at the next one.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql.utils import AnalysisException

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.errors import UserError
from txwatch.infra.session import create_session
from txwatch.infra.tables import sql_quote
from txwatch.lake import table_exists
from txwatch.sql_client import LAKE_ROOT_PROPERTY, recorded_lake_root

# What the catalog logs that nobody can act on, quieted. Warnings on every start: a Delta
# table has no Hive SerDe (Hive itself cannot read it: Spark can), Hive settings Spark does
# not use, a new metastore's "version information not found". And the Thrift server's
# stack trace of a client's failing statement: the client gets the message.
QUIET_LOGGERS = {
    "org.apache.spark.sql.hive.HiveExternalCatalog": "ERROR",
    "org.apache.hadoop.hive.metastore.ObjectStore": "ERROR",
    "org.apache.hadoop.hive.conf.HiveConf": "ERROR",
    "org.apache.hadoop.hive.ql.session.SessionState": "ERROR",
    "org.apache.spark.sql.execution.datasources.v2.CreateNamespaceExec": "ERROR",
    "org.apache.spark.scheduler.DAGScheduler": "ERROR",
    "org.apache.hive.service.cli.thrift.ThriftCLIService": "OFF",
    "org.apache.spark.sql.hive.thriftserver.SparkExecuteStatementOperation": "OFF",
}

# How long to wait for another process to let go of the embedded metastore.
LOCK_WAIT_S = 5.0


class CatalogInUseError(UserError):
    """The embedded metastore is open in another process (Derby allows one)."""


def open_catalog(conf: Conf, app_suffix: str) -> SparkSession:
    """A session on the catalog, every existing table registered, ``catalog.database`` current.

    Raises ``CatalogInUseError`` when another process holds the embedded metastore.
    """
    if not conf.catalog.metastore_uri and "://" in conf.lake_root:
        raise UserError(
            "catalog.metastore_uri is empty, which means an embedded metastore in "
            f"lake_root/_catalog, and that needs a local lake_root (not {conf.lake_root}): "
            "give the thrift:// URI of the cluster's Hive metastore"
        )
    metastore_dir = conf.catalog.metastore_dir(conf.lake_root)
    active = SparkSession.getActiveSession()
    if active is not None:
        if active.conf.get("spark.sql.catalogImplementation") != "hive":
            raise UserError(
                "this process already runs a Spark session without the catalog; the catalog "
                "needs a session of its own (a new process)"
            )
    elif metastore_dir is not None:
        _check_not_in_use(metastore_dir)
    # Nothing read through the catalog needs the token key, and any SQL a session runs can
    # read its JVM's environment (reflect('java.lang.System', 'getenv', ...)): a session
    # this process starts does not get it.
    os.environ.pop(conf.privacy.token_key_env, None)
    spark = create_session(conf, app_suffix, catalog=True)
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    if metastore_dir is not None:
        # Derby writes its log where the JVM started unless told otherwise (and to the
        # console when the file's folder is missing); read at the first connection, which
        # is still to come.
        os.makedirs(metastore_dir, exist_ok=True)
        jvm.java.lang.System.setProperty("derby.stream.error.file", f"{metastore_dir}/derby.log")
    for logger, level in QUIET_LOGGERS.items():
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            logger, jvm.org.apache.logging.log4j.Level.getLevel(level)
        )
    try:
        register_tables(spark, conf)
    except AnalysisException as err:
        if "metastore" not in str(err).lower() and "derby" not in str(err).lower():
            raise
        raise UserError(_metastore_problem(conf, err)) from None
    return spark


def _check_not_in_use(metastore_dir: str) -> None:
    """Fail fast when another process has the embedded metastore open: Derby would retry
    for 20 s and print a stack trace each time. Derby holds an exclusive lock on
    ``dbex.lck`` while it has the database open (a POSIX lock, so testable from here)."""
    lock_file = Path(metastore_dir) / "metastore_db" / "dbex.lck"
    # A process that just closed its session (a notebook's kernel shut down, a sql run that
    # ended) may take a moment to let go.
    deadline = time.monotonic() + LOCK_WAIT_S
    while lock_file.is_file():
        with lock_file.open("r+b") as lock:
            try:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() < deadline:
                    time.sleep(0.25)
                    continue
                raise CatalogInUseError(
                    f"the catalog in {metastore_dir} is open in another Spark process (its "
                    "embedded metastore allows one at a time): `./spark-submit.sh "
                    "thriftserver`, whose server `./spark-submit.sh sql` uses, or a notebook's "
                    "running kernel; stop it or query through the server"
                ) from None
            fcntl.lockf(lock, fcntl.LOCK_UN)
            return


def _metastore_problem(conf: Conf, err: Exception) -> str:
    where = conf.catalog.metastore_uri or conf.catalog.metastore_dir(conf.lake_root)
    return f"the catalog's metastore ({where}) cannot be opened: {str(err).splitlines()[0]}"


def register_tables(spark: SparkSession, conf: Conf) -> list[str]:
    """Register every Delta table under ``lake_root`` that the catalog lacks; drop the
    registrations of tables whose folder is gone. Returns the tables registered now.

    Registrations made from another ``lake_root`` (the lake moved: locations are absolute)
    are all made again; the database records the lake only once that is done.
    """
    database = conf.catalog.database
    if not spark.catalog.databaseExists(database):
        # (IF NOT EXISTS would still make the metastore log an error with a stack trace.)
        spark.sql(f"CREATE DATABASE {database} COMMENT 'txwatch: the Delta tables of one lake'")
    described = spark.sql(f"DESCRIBE DATABASE EXTENDED {database}").collect()
    moved = recorded_lake_root(described) != conf.lake_root
    registered = _registered(spark, database)
    added = []
    for name in tables.ALL_TABLES:
        qualified = f"{database}.{name}"
        if not table_exists(spark, conf, name):
            if name in registered:  # the folder was deleted, or is in the old lake
                spark.sql(f"DROP TABLE IF EXISTS {qualified}")
            continue
        if moved or name not in registered:
            # External: dropping the registration never deletes the folder.
            spark.sql(f"DROP TABLE IF EXISTS {qualified}")
            location = sql_quote(conf.table_path(name))
            spark.sql(f"CREATE TABLE {qualified} USING DELTA LOCATION '{location}'")
            added.append(name)
    if moved:
        spark.sql(
            f"ALTER DATABASE {database} SET DBPROPERTIES "
            f"('{LAKE_ROOT_PROPERTY}' = '{sql_quote(conf.lake_root)}')"
        )
    spark.catalog.setCurrentDatabase(database)
    return added


def table_names(spark: SparkSession, conf: Conf) -> list[str]:
    """The tables registered in ``catalog.database``, sorted."""
    return sorted(_registered(spark, conf.catalog.database))


def _registered(spark: SparkSession, database: str) -> set[str]:
    return {row.tableName for row in spark.sql(f"SHOW TABLES IN {database}").collect()}
