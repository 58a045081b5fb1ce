"""How the sql job shows answers and errors, whichever path (server or own session) gave them."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal

from txwatch.lake import split_statements
from txwatch.sql_client import Result, _plain, _sql_error, format_table, recorded_lake_root, show


def test_values_read_the_same_from_spark_as_from_the_thrift_server():
    # PyHive gives the server's timestamps as datetimes, its dates and decimals as text;
    # the Spark path makes them text in Spark (test_sql_catalog.py compares both paths).
    assert _plain(dt.datetime(2026, 1, 5, 11, 0, 0)) == "2026-01-05 11:00:00"
    assert _plain(dt.datetime(2026, 1, 5, 11, 0, 0, 123000)) == "2026-01-05 11:00:00.123"
    assert _plain(dt.date(2026, 1, 5)) == "2026-01-05"
    assert _plain(Decimal("0.3214")) == "0.3214"
    assert _plain(7) == 7


def test_a_table_aligns_columns_shows_nulls_and_says_when_rows_were_left_out():
    result = Result(["merchant", "payments", "rate"], [("A", 28, 0.3214), ("Bb", None, None)], True)
    assert format_table(result).splitlines() == [
        "merchant | payments |   rate",
        "---------+----------+-------",
        "A        |       28 | 0.3214",
        "Bb       |     NULL |   NULL",
        "(2 rows shown; more not shown (--limit))",
    ]


def test_csv_and_json_lines_carry_every_row():
    result = Result(["id", "note"], [("a", 'says "hi", twice'), ("b", None)], False)
    out = io.StringIO()
    show(iter([result]), "csv", out)
    assert out.getvalue() == 'id,note\na,"says ""hi"", twice"\nb,\n'
    out = io.StringIO()
    show(iter([result]), "json", out)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"id": "a", "note": 'says "hi", twice'},
        {"id": "b", "note": None},
    ]


def test_errors_name_the_problem_without_java_noise_and_list_tables_when_one_is_unknown():
    server = (
        "Error running query: [TABLE_OR_VIEW_NOT_FOUND] org.apache.spark.sql.AnalysisException: "
        "[TABLE_OR_VIEW_NOT_FOUND] The table or view `alertz` cannot be found. Verify the "
        "spelling.\nSearch path: ..."
    )
    assert str(_sql_error(server, lambda: ["alerts", "quarantine"])) == (
        "no table or view `alertz` in the catalog; tables: alerts, quarantine"
    )
    assert "none yet: run the stream job first" in str(_sql_error(server, list))
    parse = (
        "Error running query: [PARSE_SYNTAX_ERROR] org.apache.spark.sql.catalyst.parser."
        "ParseException: \n[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'. SQLSTATE: "
        "42601 (line 1, pos 0)\n\n== SQL ==\nSELEC 1\n^^^\n"
    )
    assert str(_sql_error(parse, list)) == (
        "the query failed: [PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'. "
        "SQLSTATE: 42601 (line 1, pos 0)"
    )
    unresolved = (
        "[UNRESOLVED_COLUMN.WITH_SUGGESTION] org.apache.spark.sql.AnalysisException: "
        "[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column `x` cannot be resolved. SQLSTATE: 42703;"
        "\n'Project ['x]\n"
    )
    assert str(_sql_error(unresolved, list)) == (
        "the query failed: [UNRESOLVED_COLUMN.WITH_SUGGESTION] A column `x` cannot be "
        "resolved. SQLSTATE: 42703;"
    )


def test_a_script_splits_at_semicolons_outside_quotes_and_comments():
    script = (
        "-- the head; a comment\n"
        "SELECT 'a;b' AS x, \"c;d\" AS `e;f` FROM t; /* not; here */ SELECT 1 -- tail; x\n"
        ";SELECT 'it\\'s;' ;"
    )
    assert split_statements(script) == [
        "SELECT 'a;b' AS x, \"c;d\" AS `e;f` FROM t",
        "SELECT 1",
        "SELECT 'it\\'s;'",
    ]


def test_json_has_no_nan_and_a_limit_of_zero_still_says_rows_were_left_out():
    out = io.StringIO()
    show(iter([Result(["v"], [(float("nan"),), (1.5,)], False)]), "json", out)
    assert out.getvalue().splitlines() == ['{"v": null}', '{"v": 1.5}']
    assert format_table(Result(["v"], [], True)).splitlines()[-1] == (
        "(0 rows shown; more not shown (--limit))"
    )


def test_the_lake_a_database_was_registered_from_is_read_from_its_description():
    rows = [("Comment", "txwatch"), ("Properties", "((a,b), (txwatch.lake_root,/l a/ke), (c,d))")]
    assert recorded_lake_root(rows) == "/l a/ke"
    assert recorded_lake_root([("Properties", "((txwatch.lake_root,/lake))")]) == "/lake"
    assert recorded_lake_root([("Properties", "")]) is None
