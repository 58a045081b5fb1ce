from __future__ import annotations

import shlex

from pyspark.sql import SparkSession

from txwatch.infra.config import Conf


def test_the_driver_jvm_starts_with_the_heap_and_java_options_of_the_conf(
    spark: SparkSession, base_conf: Conf
):
    """create_session hands spark.driver.memory and spark.driver.extraJavaOptions to the JVM's
    launch, the Java options after the log settings (which would otherwise replace them)."""
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    arguments = list(runtime.getInputArguments())
    options = base_conf.spark.options
    assert f"-Xmx{options['spark.driver.memory']}" in arguments
    java_options = shlex.split(options["spark.driver.extraJavaOptions"])
    assert java_options
    assert set(java_options) <= set(arguments)
    assert any(a.startswith("-Dlog4j2.configurationFile=file:") for a in arguments)
