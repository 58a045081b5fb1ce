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
    """spark.driver.memory only works as --driver-memory: the script reads it from the conf."""
    conf = tmp_path / "big.yaml"
    conf.write_text(
        f"extends: {REPO / 'conf' / 'local.yaml'}\nspark:\n  options:\n"
        "    spark.driver.memory: 3g\n"
    )
    # SPARK_SUBMIT=echo prints the spark-submit command line instead of running it.
    result = subprocess.run(
        [str(REPO / "spark-submit.sh"), "stream", "--conf", str(conf), "--available-now"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SPARK_SUBMIT": "echo"},
    )
    assert result.returncode == 0, result.stderr
    assert "--driver-memory 3g" in result.stdout
    # The scheduler pools of the queries (the code itself runs from a zip there).
    assert f"spark.scheduler.allocation.file=file://{REPO}/conf/fairscheduler.xml" in result.stdout
    assert result.stdout.rstrip().endswith(f"jobs/stream.py --conf {conf} --available-now")
