"""What the notebooks in ``notebooks/`` share: the repository's config and lake, a Spark
session on the catalog, and a check that the tables a notebook reads exist.

A notebook runs from its own folder; the config (``TXWATCH_CONF``, default
``conf/local.yaml``) and a relative ``lake_root`` are read from the repository root, so it
reads the same lake as ``./spark-submit.sh``. ``TXWATCH_LAKE_ROOT`` points it elsewhere.
"""

from __future__ import annotations

import contextlib
import os

from pyspark.sql import SparkSession

from txwatch.catalog import CatalogInUseError, open_catalog
from txwatch.infra.config import DEFAULT_CONF, Conf, load_conf
from txwatch.infra.session import REPO_ROOT, create_session
from txwatch.lake import register_views


def repo_conf() -> Conf:
    """The config the jobs use, its relative paths taken from the repository root."""
    with contextlib.chdir(REPO_ROOT):
        return load_conf(os.environ.get("TXWATCH_CONF", DEFAULT_CONF))


def open_lake(app: str = "notebook") -> tuple[SparkSession, Conf]:
    """A Spark session on the catalog (every table by name) and the config.

    While another process holds the embedded catalog (a running Thrift server), the tables
    are read by path under the same names instead, and the notebook is told so.
    """
    conf = repo_conf()
    try:
        spark = open_catalog(conf, app)
    except CatalogInUseError as err:
        print(f"note: {err}.\nReading the tables by path, under the same names.")
        spark = create_session(conf, app)
        register_views(spark, conf)
    return spark, conf


def require(spark: SparkSession, *table_names: str, made_by: str) -> bool:
    """Whether every table in ``table_names`` exists; if not, say which and what makes them."""
    missing = [name for name in table_names if not spark.catalog.tableExists(name)]
    if missing:
        print(
            f"Table(s) {', '.join(missing)} do not exist yet in this lake: {made_by} makes "
            "them. The cells below skip until then."
        )
    return not missing
