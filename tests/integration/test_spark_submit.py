from __future__ import annotations

import os
import subprocess

from tests.conftest import REPO


def test_unknown_job_prints_usage_and_fails():
    result = subprocess.run(
        [str(REPO / "spark-submit.sh"), "bogus"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown job 'bogus'" in result.stderr
    assert "./spark-submit.sh <job>" in result.stdout


def test_job_help_goes_through_spark_submit():
    result = subprocess.run(
        [str(REPO / "spark-submit.sh"), "replay", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--key-field" in result.stdout


def test_driver_memory_from_the_conf_reaches_spark_submit(tmp_path):
    """spark.driver.memory and spark.driver.extraJavaOptions only work as --driver-memory and
    --driver-java-options: the script reads them from the conf."""
    conf = tmp_path / "big.yaml"
    conf.write_text(
        f"extends: {REPO / 'conf' / 'local.yaml'}\nspark:\n  options:\n"
        "    spark.driver.memory: 3g\n"
        "    spark.driver.extraJavaOptions: -XX:+UseSerialGC -Dtxwatch.test=1\n"
    )
    # A SPARK_SUBMIT that prints its arguments one per line instead of running Spark.
    printer = tmp_path / "print-arguments"
    printer.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    printer.chmod(0o755)
    result = subprocess.run(
        [str(REPO / "spark-submit.sh"), "stream", "--conf", str(conf), "--available-now"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SPARK_SUBMIT": str(printer)},
    )
    assert result.returncode == 0, result.stderr
    arguments = result.stdout.splitlines()

    def value_of(flag: str) -> str:
        return arguments[arguments.index(flag) + 1]

    assert value_of("--driver-memory") == "3g"
    log4j = f"-Dlog4j2.configurationFile=file:{REPO}/conf/log4j2.properties"
    assert value_of("--driver-java-options") == f"{log4j} -XX:+UseSerialGC -Dtxwatch.test=1"
    # The scheduler pools of the queries (the code itself runs from a zip there).
    assert f"spark.scheduler.allocation.file=file://{REPO}/conf/fairscheduler.xml" in arguments
    assert arguments[-4:] == [
        str(REPO / "jobs" / "stream.py"),
        "--conf",
        str(conf),
        "--available-now",
    ]


def echoed_command(*args: str) -> subprocess.CompletedProcess[str]:
    """The spark-submit command line the script builds (SPARK_SUBMIT=echo prints it)."""
    env = {**os.environ, "SPARK_SUBMIT": "echo"}
    env.pop("SPARK_MASTER", None)
    return subprocess.run(
        [str(REPO / "spark-submit.sh"), *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_options_after_the_job_name_go_to_spark_submit_not_to_the_job():
    result = echoed_command(
        "stream",
        "--available-now",
        "--master",
        "spark://127.0.0.1:7077",
        "--executor-memory",
        "3g",
        "--total-executor-cores",
        "4",
        "--spark-conf",
        "a.b=c",
    )
    assert result.returncode == 0, result.stderr
    assert "--master spark://127.0.0.1:7077 --deploy-mode client" in result.stdout
    assert "--executor-memory 3g" in result.stdout
    assert "--total-executor-cores 4" in result.stdout
    assert "--conf a.b=c" in result.stdout
    assert result.stdout.rstrip().endswith("jobs/stream.py --available-now")


def test_executor_sizes_come_from_the_conf_and_a_flag_wins(tmp_path):
    conf = tmp_path / "sized.yaml"
    conf.write_text(
        f"extends: {REPO / 'conf' / 'local.yaml'}\nspark:\n  options:\n"
        "    spark.executor.memory: 6g\n    spark.executor.cores: '3'\n"
    )
    result = echoed_command("stream", "--conf", str(conf), "--executor-cores", "2")
    assert result.returncode == 0, result.stderr
    assert "--executor-memory 6g" in result.stdout
    assert "--executor-cores 2" in result.stdout and "--executor-cores 3" not in result.stdout


def test_sizes_are_read_from_a_conf_whose_secrets_this_shell_does_not_hold(tmp_path):
    # Cluster deploy mode: the Kafka password is the driver's, not the submitting shell's.
    conf = tmp_path / "secret.yaml"
    conf.write_text(
        f"extends: {REPO / 'conf' / 'local.yaml'}\n"
        "kafka:\n  options:\n    kafka.sasl.jaas.config: 'password=\"${TXWATCH_TEST_UNSET}\"'\n"
        "spark:\n  options:\n    spark.executor.memory: 6g\n"
    )
    assert "TXWATCH_TEST_UNSET" not in os.environ
    result = echoed_command("stream", "--conf", str(conf))
    assert result.returncode == 0, result.stderr
    assert "--executor-memory 6g" in result.stdout


def test_cluster_deploy_mode_on_a_standalone_master_is_refused_with_the_reason():
    result = echoed_command("--master", "spark://h:7077", "--deploy-mode", "cluster", "stream")
    assert result.returncode == 2
    assert "needs a yarn or k8s:// master" in result.stderr


def test_cluster_deploy_mode_reads_conf_files_from_the_drivers_directory():
    result = echoed_command("--master", "yarn", "--deploy-mode", "cluster", "stream")
    assert result.returncode == 0, result.stderr
    assert "--deploy-mode cluster" in result.stdout
    assert "spark.scheduler.allocation.file=fairscheduler.xml" in result.stdout
    assert "-Dlog4j2.configurationFile=log4j2.properties" in result.stdout
    # The driver starts on the cluster, without this shell's environment.
    assert "spark.yarn.appMasterEnv.TXWATCH_SUBMITTED=1" in result.stdout


def test_double_dash_ends_the_scripts_options_and_files_are_merged(tmp_path):
    truststore = tmp_path / "truststore.jks"
    truststore.write_bytes(b"")
    result = echoed_command("--files", str(truststore), "sql", "--", "--master", "-h")
    assert result.returncode == 0, result.stderr
    assert f"conf/log4j2.properties,{truststore}" in result.stdout
    assert result.stdout.rstrip().endswith("jobs/sql.py --master -h")
