"""The Spark session every txwatch job uses: Delta enabled, UTC, settings from ``conf``.

Under ``spark-submit.sh`` the Kafka and Delta jars arrive with ``--jars``. A job started as
plain Python (``python -m jobs.simulate``, the tests, a notebook) adds the jars that
``scripts/setup.sh`` resolved into ``.deps/spark-jars`` itself.
"""

from __future__ import annotations

import glob
import os
import shlex
import sys
from pathlib import Path

from pyspark import SparkContext
from pyspark.sql import SparkSession

from txwatch.infra.config import Conf
from txwatch.infra.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
FAIR_SCHEDULER_FILE = REPO_ROOT / "conf" / "fairscheduler.xml"
LOCAL_JARS_DIR = Path(os.environ.get("TXWATCH_SPARK_JARS", REPO_ROOT / ".deps" / "spark-jars"))
# txwatch's own Spark SQL functions (udfs/jvm), compiled by scripts/setup.sh.
UDFS_JAR = REPO_ROOT / ".deps" / "udfs" / "txwatch-udfs.jar"


def local_jars() -> list[str]:
    """The Kafka connector and Delta jars resolved by ``scripts/setup.sh``, and the
    txwatch functions' jar it compiles."""
    found = sorted(glob.glob(str(LOCAL_JARS_DIR / "*.jar")))
    return [*found, str(UDFS_JAR)] if found and UDFS_JAR.is_file() else []


def _set_driver_options(conf: Conf, master: str) -> None:
    """Give a driver started from plain Python what ``spark-submit.sh`` gives its drivers:
    the heap ``spark.driver.memory`` asks for, the JVM options of
    ``spark.driver.extraJavaOptions`` after the log settings of ``conf/log4j2.properties``
    (``TXWATCH_LOG4J``: another file) and, on a local master, the loopback address.

    Under spark-submit the driver's JVM is already running when the session builder applies
    its settings. Here PySpark starts the JVM with the builder's settings and then the
    options in ``PYSPARK_SUBMIT_ARGS``, whose ``--driver-java-options`` (the log settings)
    replaces ``spark.driver.extraJavaOptions``: so both go there, joined. A
    ``--driver-java-options`` already in ``PYSPARK_SUBMIT_ARGS`` wins over both.
    """
    if SparkContext._active_spark_context is not None:
        return
    if master.startswith("local"):
        # Not the host name's address, which Spark warns about when it resolves to loopback.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    existing = os.environ.get("PYSPARK_SUBMIT_ARGS", "pyspark-shell")
    options = []
    memory = conf.spark.options.get("spark.driver.memory")
    if memory and "--driver-memory" not in existing:
        options.append(f"--driver-memory {memory}")
    log4j = os.environ.get("TXWATCH_LOG4J", str(REPO_ROOT / "conf" / "log4j2.properties"))
    java_options = [f"-Dlog4j2.configurationFile=file:{log4j}"] if Path(log4j).is_file() else []
    java_options += shlex.split(conf.spark.options.get("spark.driver.extraJavaOptions", ""))
    if java_options and "--driver-java-options" not in existing:
        # PySpark splits PYSPARK_SUBMIT_ARGS like a shell (a checkout path with spaces).
        options.append(f"--driver-java-options {shlex.quote(shlex.join(java_options))}")
    if options:
        os.environ["PYSPARK_SUBMIT_ARGS"] = " ".join([*options, existing])


def _with_token_key_for_executors(
    builder: SparkSession.Builder, conf: Conf
) -> SparkSession.Builder:
    """Hand the token key's variable (``privacy.token_key_env``) to the executors.

    The keyed-hash function reads it where its task runs: in local mode that is this
    process, on a cluster an executor whose environment comes from its worker plus
    ``spark.executorEnv.*``. Spark redacts the value in its UI and event logs (its
    ``spark.redaction.regex`` matches "token"); the key is never in a plan.
    """
    variable = conf.privacy.token_key_env
    key = os.environ.get(variable)
    if not key:
        return builder
    return builder.config(f"spark.executorEnv.{variable}", key)


def _with_catalog(builder: SparkSession.Builder, conf: Conf) -> SparkSession.Builder:
    """Spark's Hive metastore as the session catalog (``conf.catalog``, ``txwatch.catalog``).

    Embedded (no ``metastore_uri``): a Derby database in ``<lake_root>/_catalog``, the
    warehouse beside it. (Not ``spark.sql.catalog.spark_catalog.defaultDatabase``: Spark
    refuses to start a session whose default database does not exist yet.)
    """
    builder = (
        builder.enableHiveSupport()
        # Where `./spark-submit.sh thriftserver` listens: read from the Hadoop configuration
        # when the server starts, so it must be there from the session's start.
        .config("spark.hadoop.hive.server2.thrift.bind.host", conf.catalog.thrift_host)
        .config("spark.hadoop.hive.server2.thrift.port", str(conf.catalog.thrift_port))
    )
    metastore_dir = conf.catalog.metastore_dir(conf.lake_root)
    if metastore_dir is None:
        return builder.config("spark.hadoop.hive.metastore.uris", conf.catalog.metastore_uri)
    return builder.config(
        "spark.hadoop.javax.jdo.option.ConnectionURL",
        f"jdbc:derby:;databaseName={metastore_dir}/metastore_db;create=true",
    ).config("spark.sql.warehouse.dir", f"{metastore_dir}/warehouse")


def create_session(
    conf: Conf, app_suffix: str, master: str | None = None, catalog: bool = False
) -> SparkSession:
    """Build (or reuse) the session for one job, named ``<app_name>-<app_suffix>``.

    ``catalog``: with the Hive metastore of ``conf.catalog`` (open it with
    ``txwatch.catalog.open_catalog``, which also registers the tables).
    """
    builder = (
        SparkSession.builder.appName(f"{conf.spark.app_name}-{app_suffix}")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(conf.spark.shuffle_partitions))
        # Stream-stream joins keep their state in RocksDB: off-heap, so a long watermark does
        # not grow the JVM heap.
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        # How the join stores its state: stream.join_state_format in conf/base.yaml. Only
        # new checkpoints take it; an existing query keeps the format it started with.
        .config("spark.sql.streaming.join.stateFormatVersion", str(conf.stream.join_state_format))
        .config(
            "spark.sql.streaming.join.stateFormatV4.enabled",
            str(conf.stream.join_state_format == 4).lower(),
        )
        # Spark keeps the classes it compiled for generated code in a cache of 100 entries
        # by default. Four queries, their foreachBatch jobs and Delta's own plans need
        # several hundred, so every micro-batch compiled them again: a third of the CPU of
        # the continuous job (Java Flight Recorder), and alert batches of 9 s instead of
        # 3.6 s at 2,000 events/s.
        .config("spark.sql.codegen.cache.maxEntries", "2000")
        # Only the changes of a micro-batch go to the checkpoint, not a RocksDB snapshot:
        # commits stay short however large the join state is.
        .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
        # A micro-batch caches what it reads once and writes several times (persist) and
        # drops it seconds later: compressing the cache costs more CPU than it saves.
        .config("spark.sql.inMemoryColumnarStorage.compressed", "false")
        # Queries run their jobs in scheduler pools (conf/fairscheduler.xml) so the alert
        # path is not queued behind a table writer's commit.
        .config("spark.scheduler.mode", "FAIR")
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        # query.recentProgress feeds pipeline_progress after an --available-now run.
        .config("spark.sql.streaming.numRecentProgressUpdates", "1000")
    )
    if master:
        builder = builder.master(master)
    if not os.environ.get("TXWATCH_SUBMITTED"):
        master = master or os.environ.get("SPARK_MASTER", "local[*]")
        _set_driver_options(conf, master)
        jars = local_jars()
        if not jars:
            raise UserError(
                f"no Spark jars in {LOCAL_JARS_DIR} or no {UDFS_JAR}: run `make setup` "
                "(scripts/setup.sh) first, or start the job with ./spark-submit.sh"
            )
        builder = builder.config("spark.jars", ",".join(jars))
        # Python workers run the stateful series detector (pandas, pyarrow, protobuf): the
        # same interpreter as this driver, not whatever `python3` is first on the PATH.
        # The environment, not a session setting: the JVM starts below and passes it on to
        # every Python process it launches (the driver-side transformWithState worker too).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(master)
    if FAIR_SCHEDULER_FILE.is_file() and not os.environ.get("TXWATCH_SUBMITTED"):
        # Under spark-submit.sh the code runs from a zip; the script passes the file.
        builder = builder.config("spark.scheduler.allocation.file", str(FAIR_SCHEDULER_FILE))
    for key, value in conf.spark.options.items():
        builder = builder.config(key, value)
    builder = _with_token_key_for_executors(builder, conf)
    if catalog:
        builder = _with_catalog(builder, conf)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("TXWATCH_SPARK_LOG_LEVEL", "WARN"))
    register_functions(spark)
    return spark


def register_functions(spark: SparkSession) -> None:
    """Register txwatch's JVM functions (``udfs.privacy.HMAC_FUNCTION``) in the session."""
    from pyspark.sql.types import StringType

    from udfs.privacy import HMAC_CLASS, HMAC_FUNCTION

    try:
        spark.udf.registerJavaFunction(HMAC_FUNCTION, HMAC_CLASS, StringType())
    except Exception as err:  # "Can not load class io.txwatch...": the jar is not there
        if HMAC_CLASS not in str(err):
            raise
        raise UserError(
            f"Spark function {HMAC_FUNCTION} ({HMAC_CLASS}) cannot be loaded: its jar "
            f"{UDFS_JAR.relative_to(REPO_ROOT)} is missing from the session; run `make setup` "
            "(scripts/setup.sh), which compiles it"
        ) from None
