"""The Spark session every txwatch job uses: Delta enabled, UTC, settings from ``conf``.

Under ``spark-submit.sh`` the Kafka and Delta jars arrive with ``--jars``. A job started as
plain Python (``python -m jobs.simulate``, the tests, a notebook) adds the jars that
``scripts/setup.sh`` resolved into ``.deps/spark-jars`` itself.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from pyspark.sql import SparkSession

from txwatch.infra.config import Conf
from txwatch.infra.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_JARS_DIR = Path(os.environ.get("TXWATCH_SPARK_JARS", REPO_ROOT / ".deps" / "spark-jars"))


def local_jars() -> list[str]:
    """The Kafka connector and Delta jars resolved by ``scripts/setup.sh``."""
    return sorted(glob.glob(str(LOCAL_JARS_DIR / "*.jar")))


def create_session(conf: Conf, app_suffix: str, master: str | None = None) -> SparkSession:
    """Build (or reuse) the session for one job, named ``<app_name>-<app_suffix>``."""
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
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        # query.recentProgress feeds pipeline_progress after an --available-now run.
        .config("spark.sql.streaming.numRecentProgressUpdates", "1000")
    )
    if master:
        builder = builder.master(master)
    if not os.environ.get("TXWATCH_SUBMITTED"):
        jars = local_jars()
        if not jars:
            raise UserError(
                f"no Spark jars in {LOCAL_JARS_DIR}: run `make setup` (scripts/setup.sh) first, "
                "or start the job with ./spark-submit.sh"
            )
        builder = builder.config("spark.jars", ",".join(jars))
        builder = builder.master(master or os.environ.get("SPARK_MASTER", "local[*]"))
    for key, value in conf.spark.options.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("TXWATCH_SPARK_LOG_LEVEL", "WARN"))
    return spark
