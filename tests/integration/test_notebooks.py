"""Every notebook in notebooks/ runs top to bottom, from its own folder, against a lake with
every table (nbclient, a real kernel, the kernel's own Spark on the catalog); committed
notebooks carry no outputs."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO
from txwatch.anonymize import anonymize
from txwatch.infra import tables
from txwatch.lake import read_pseudonymized, read_table
from txwatch.quality import evaluate

pytestmark = pytest.mark.kafka

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
RELEASE_K = 5


def run_notebook(path: Path, lake_root: str, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Execute ``path`` as Jupyter would from its folder; return every cell's outputs."""
    # The kernel (and its Spark) inherits this environment: the test's lake, local conf.
    monkeypatch.setenv("TXWATCH_LAKE_ROOT", lake_root)
    monkeypatch.setenv("TXWATCH_CONF", "conf/local.yaml")
    monkeypatch.delenv("TXWATCH_SUBMITTED", raising=False)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return [out for cell in notebook.cells for out in cell.get("outputs", [])]


def text_of(outputs: list[dict]) -> str:
    return "".join(out.get("text", "") for out in outputs if out["output_type"] == "stream")


def figures_in(outputs: list[dict]) -> int:
    return sum("image/png" in out.get("data", {}) for out in outputs)


@pytest.fixture(scope="module")
def full_lake(spark, model_lake):
    """The shared lake with the batch jobs' tables too: the release and an evaluation."""
    conf = model_lake.conf
    # This lake is small: the default k would suppress more than the default allows.
    small = dataclasses.replace(conf.anonymize, k=RELEASE_K, max_suppression=0.05)
    anonymize(spark, dataclasses.replace(conf, anonymize=small))
    evaluate(
        spark,
        conf,
        read_table(spark, conf, tables.ALERTS),
        read_pseudonymized(spark, conf, tables.GROUND_TRUTH),
    )
    return conf


def test_the_notebooks_are_committed_without_outputs():
    assert [p.stem for p in NOTEBOOKS] == ["alerts", "model", "monitoring", "privacy", "similarity"]
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_lake_with_every_table(path, full_lake, monkeypatch):
    outputs = run_notebook(path, full_lake.lake_root, monkeypatch)
    text = text_of(outputs)
    assert "do not exist yet" not in text
    # Read through the catalog, not by path (no Thrift server holds it here).
    assert "Reading the tables by path" not in text
    assert figures_in(outputs) >= 1, text
    if path.stem == "alerts":
        assert "delta-rs and Spark agree: True" in text
        html = "".join(out.get("data", {}).get("text/html", "") for out in outputs)
        assert "folium" in html or "leaflet" in html.lower()  # the travel map was drawn
        drawn = re.search(r"(\d+) impossible-travel alerts with both ends known", text)
        assert drawn and int(drawn.group(1)) >= 1, text
    if path.stem == "privacy":
        assert f"every class holds at least k = {RELEASE_K} rows: True" in text


def test_a_notebook_says_which_tables_are_missing_instead_of_failing(tmp_path, monkeypatch):
    outputs = run_notebook(
        REPO / "notebooks" / "similarity.ipynb", str(tmp_path / "lake"), monkeypatch
    )
    text = text_of(outputs)
    assert "similar_accounts, account_clusters do not exist yet" in text
    assert "./spark-submit.sh similarity makes them" in text
    assert figures_in(outputs) == 0
