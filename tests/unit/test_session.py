from __future__ import annotations

import shlex

from pyspark.sql import SparkSession

from txwatch.infra.config import Conf


def test_the_driver_jvm_starts_with_the_heap_and_java_options_of_the_conf(
    spark: SparkSession, base_conf: Conf
):
    """Set in the session builder, spark.driver.memory and spark.driver.extraJavaOptions are
    ignored (the JVM is already running): create_session hands them to the JVM's launch."""
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    arguments = list(runtime.getInputArguments())
    options = base_conf.spark.options
    assert f"-Xmx{options['spark.driver.memory']}" in arguments
    java_options = shlex.split(options["spark.driver.extraJavaOptions"])
    assert java_options
    assert set(java_options) <= set(arguments)
