from __future__ import annotations

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
