from __future__ import annotations

import pytest

from txwatch.infra.errors import UserError
from txwatch.queries.base import QuerySpec, RunContext
from txwatch.queries.runner import run_available_now


def _never_started(ctx: RunContext):
    raise AssertionError("a query waiting for another must not start")


def test_queries_that_wait_for_each_other_are_an_error_not_a_hang(spark, conf):
    first = QuerySpec("first", _never_started, after=("second",))
    second = QuerySpec("second", _never_started, after=("first",))
    ctx = RunContext(spark, conf, available_now=True)
    with pytest.raises(UserError, match="queries first, second wait for each other"):
        run_available_now(ctx, [first, second])
