"""The outlier model: features, threshold, registry round trip and hot swap, explanations."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import datetime, timedelta

import pyspark.sql.functions as F
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer

from txwatch import model, registry
from txwatch.model_scorer import ModelScorer
from txwatch.queries.base import query_sql_conf
from txwatch.training import write_profiles
from udfs.geo import haversine_m_py
from udfs.model_alerts import model_outlier_alerts
from udfs.model_features import FEATURES, FEATURES_SQL, as_seen, customer_profiles, leave_one_out
from udfs.payment_history import QUERY_SQL_CONF, payment_history_stream
from udfs.similarity import BehaviourTokens
from udfs.velocity import count_prior, with_velocity

T0 = datetime(2026, 1, 5, 8, 0, 0)
COLUMNS = (
    "transaction_id string, user_id string, device_id string, merchant_category string, "
    "amount double, currency string, status string, latitude double, longitude double, "
    "event_time timestamp"
)
HOME = (48.85, 2.35)


def payment(tx_id, amount, category="grocery", device="d1", pos=HOME, status="approved", t=0):
    return (tx_id, "u1", device, category, amount, "EUR", status, *pos, T0 + timedelta(hours=t))


HISTORY = [
    payment("h1", 10.0, t=0),
    payment("h2", 20.0, t=1),
    payment("h3", 40.0, category="cafe", t=2),
    payment("h4", 80.0, t=3),
]


def features(df):
    return SQLTransformer(statement=FEATURES_SQL).transform(df)


def test_features_of_a_new_payment_against_the_profile(spark):
    history_df = spark.createDataFrame(HISTORY, COLUMNS)
    profiles_df = customer_profiles(history_df)
    far = (52.52, 13.40)  # Berlin, ~880 km from HOME
    new_df = spark.createDataFrame(
        [payment("n1", 1000.0, "electronics", "d9", far, "denied", t=4)], COLUMNS
    )
    row = features(as_seen(with_velocity(new_df), profiles_df)).first()

    logs = [math.log1p(a) for a in (10.0, 20.0, 40.0, 80.0)]
    mean = sum(logs) / 4
    sd = math.sqrt(sum(x * x for x in logs) / 4 - mean * mean)
    assert row.usual_n == 4
    assert row.amount_z == pytest.approx((math.log1p(1000.0) - mean) / sd)
    assert row.category_novelty == 1.0  # electronics: never before
    assert row.new_device == 1.0
    assert row.declined == 1.0
    # The nearest place: the cell of HOME, centred on (48.9, 2.4) (0.1-degree cells).
    expected_km = haversine_m_py(*far, 48.9, 2.4) / 1000
    assert row.distance_log_km == pytest.approx(math.log1p(expected_km), rel=1e-6)


def test_leave_one_out_judges_a_past_payment_against_the_others(spark):
    history_df = spark.createDataFrame(HISTORY, COLUMNS)
    seen = features(leave_one_out(with_velocity(history_df), customer_profiles(history_df)))
    row = seen.filter(F.col("transaction_id") == "h3").first()
    logs = [math.log1p(a) for a in (10.0, 20.0, 80.0)]  # h3 (40, cafe) left out
    mean = sum(logs) / 3
    sd = math.sqrt(sum(x * x for x in logs) / 3 - mean * mean)
    assert row.usual_n == 3
    assert row.amount_z == pytest.approx((math.log1p(40.0) - mean) / sd)
    assert row.category_novelty == 1.0  # the only cafe payment: the others never were
    assert row.new_device == 0.0  # d1 was used by the other three
    assert row.distance_log_km == pytest.approx(math.log1p(haversine_m_py(*HOME, 48.9, 2.4) / 1000))
    # With fewer than MIN_HISTORY other payments a customer is not scored.
    two_df = spark.createDataFrame(HISTORY[:3], COLUMNS)
    assert leave_one_out(two_df, customer_profiles(two_df)).count() == 0


def test_threshold_is_the_quantile_of_a_known_distribution(spark):
    scores_df = spark.range(1000).select((F.col("id") / 10.0).alias("outlier_score"))
    # 0.0, 0.1, ..., 99.9: the 0.995 quantile (linear interpolation) is 99.4005
    assert model.calibrate_threshold(scores_df, 0.995) == pytest.approx(99.4005)
    assert model.calibrate_threshold(scores_df, 0.5) == pytest.approx(49.95)


def population(spark, users=30, per_user=25, seed=3):
    """Customers with steady habits: one device, three categories, one neighbourhood."""
    rng = random.Random(seed)
    rows = []
    for u in range(users):
        usual = rng.uniform(2.0, 4.0)
        home = (48.8 + rng.uniform(0, 0.2), 2.3 + rng.uniform(0, 0.2))
        for i in range(per_user):
            when = T0 + timedelta(minutes=17 * i + u)
            rows.append(habit_payment(rng, f"t{u}-{i}", u, usual, home, when, decline_rate=0.05))
    return spark.createDataFrame(rows, COLUMNS)


def habit_payment(rng, tx_id, u, usual, home, when, decline_rate=0.0):
    """A payment of customer ``u`` near ``home``, of about exp(``usual``) EUR."""
    pos = (home[0] + rng.gauss(0, 0.01), home[1] + rng.gauss(0, 0.01))
    category = rng.choice(("grocery", "cafe", "fuel"))
    amount = round(math.exp(rng.gauss(usual, 0.4)), 2)
    status = "approved" if not decline_rate or rng.random() > decline_rate else "denied"
    return (tx_id, f"u{u}", f"d{u}", category, amount, "EUR", status, *pos, when)


def fit(spark, conf, clusters):
    history_df = population(spark)
    version = write_profiles(spark, conf, customer_profiles(history_df))
    profiles_df = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(conf.table_path("customer_profiles"))
    )
    seen_df = leave_one_out(with_velocity(history_df), profiles_df)
    fitted = model.fit_model(seen_df, clusters, seed=1)
    threshold = model.calibrate_threshold(model.score(fitted, seen_df), 0.99)
    return fitted, threshold, version


def register(conf, fitted, threshold, profiles_version, tmp_path, name):
    model_dir = str(tmp_path / name)
    fitted.write().overwrite().save(model_dir)
    return registry.register(
        conf,
        model_dir,
        params={
            "threshold": repr(threshold),
            "profiles_table": conf.table_path("customer_profiles"),
            "profiles_version": profiles_version,
        },
        metrics={"threshold": threshold},
    )


def test_registered_model_scores_as_fitted_and_is_swapped_without_restart(spark, conf, tmp_path):
    scorer = ModelScorer(spark, conf)
    assert scorer.refresh(force=True) is None  # nothing registered yet

    fitted, threshold, profiles_version = fit(spark, conf, clusters=2)
    first = register(conf, fitted, threshold, profiles_version, tmp_path, "v1")
    assert first.version == 1
    loaded = scorer.refresh(force=True)
    assert loaded is not None and loaded.version == 1
    assert loaded.threshold == threshold

    new_df = spark.createDataFrame(
        [
            payment("n-usual", 20.0, "grocery", "d0", (48.9, 2.4), t=426 / 60),
            payment("n-odd", 5000.0, "electronics", "d-new", (40.4, -3.7), "denied", t=440 / 60),
        ],
        COLUMNS,
    ).withColumn("user_id", F.lit("u0"))
    # Velocity as the stream sees it: after the customer's earlier payments.
    new_df = (
        with_velocity(population(spark).unionByName(new_df))
        .filter(F.col("transaction_id").startswith("n-"))
        .persist()
    )
    in_memory = {
        r.transaction_id: r.outlier_score
        for r in model.score(fitted, as_seen(new_df, loaded.profiles_df)).collect()
    }
    reloaded = {
        r.transaction_id: r.outlier_score
        for r in model.score(loaded.pipeline, as_seen(new_df, loaded.profiles_df)).collect()
    }
    assert reloaded == pytest.approx(in_memory)
    assert in_memory["n-usual"] < threshold < in_memory["n-odd"]

    alerts = scorer.alerts(new_df).collect()
    assert [a.transaction_id for a in alerts] == ["n-odd"]
    assert alerts[0].alert_type == "model_outlier"
    assert "model v1" in alerts[0].reason
    assert "device d-new used in 0 of 25 past payments" in alerts[0].reason

    # A newer version is picked up by the same scorer (the stream does so every
    # model.refresh_interval), with its own threshold.
    refit, _, _ = fit(spark, conf, clusters=3)
    register(conf, refit, threshold * 2, profiles_version, tmp_path, "v2")
    assert scorer.refresh().version == 1  # not yet: refresh_interval has not passed
    swapped = scorer.refresh(force=True)
    assert swapped is not None and swapped.version == 2
    assert swapped.threshold == threshold * 2
    assert registry.newest(conf).version == 2


def test_a_version_this_job_cannot_score_with_is_refused_and_scoring_goes_on(
    spark, conf, tmp_path, capsys
):
    fitted, threshold, profiles_version = fit(spark, conf, clusters=2)
    # As if trained by a newer txwatch: its first stage reads a column this job does not have.
    moon = SQLTransformer(statement="SELECT *, usual_moon_phase AS m FROM __THIS__")
    newer = PipelineModel(stages=[moon, *fitted.stages])
    name = conf.model.name
    register(conf, newer, threshold, profiles_version, tmp_path, "newer-1")
    scorer = ModelScorer(spark, conf)
    assert scorer.refresh(force=True) is None
    said = capsys.readouterr().out
    assert f"cannot score with {name} version 1" in said
    assert "usual_moon_phase" in said and "payments pass unscored" in said

    register(conf, fitted, threshold, profiles_version, tmp_path, "v2")
    assert scorer.refresh(force=True).version == 2
    register(conf, newer, threshold, profiles_version, tmp_path, "newer-3")
    assert scorer.refresh(force=True).version == 2
    assert "scoring goes on with version 2" in capsys.readouterr().out
    assert scorer.refresh(force=True).version == 2
    assert "cannot score" not in capsys.readouterr().out  # refused once, not every refresh

    odd_df = spark.createDataFrame(
        [payment("n-odd", 5000.0, "electronics", "d-new", (40.4, -3.7), "denied", t=440 / 60)],
        COLUMNS,
    ).withColumn("user_id", F.lit("u0"))
    history_df = with_velocity(population(spark).unionByName(odd_df))
    alerts = scorer.alerts(history_df.filter(F.col("transaction_id") == "n-odd")).collect()
    assert [(a.transaction_id, a.evidence["model_version"]) for a in alerts] == [("n-odd", 2.0)]

    # A feature this job does not know (its columns may all exist) is refused too.
    with_moon = dataclasses.replace(scorer.current, features=(*FEATURES, "moon_phase"))
    assert "features this job does not compute or explain: moon_phase" in (
        scorer._cannot_score(with_moon) or ""
    )


def test_explanation_names_what_stands_out(spark, conf):
    fitted, threshold, profiles_version = fit(spark, conf, clusters=2)
    profiles_df = (
        spark.read.format("delta")
        .option("versionAsOf", profiles_version)
        .load(conf.table_path("customer_profiles"))
    )
    odd_df = spark.createDataFrame(
        [payment("n-far", 25.0, "grocery", "d0", (40.4, -3.7))], COLUMNS
    ).withColumn("user_id", F.lit("u0"))
    scored = model.score(fitted, as_seen(with_velocity(odd_df), profiles_df))
    alert = model_outlier_alerts(scored, threshold, 7, model.explanation()).first()
    assert alert is not None
    assert "km from the nearest place of their past payments" in alert.reason.split("; ")[0]
    assert alert.evidence["model_version"] == 7.0


def test_velocity_counts_the_customers_payments_just_before(spark):
    rows = [
        payment("v1", 1.0, status="denied", t=0),
        payment("v2", 1.0, status="failed", t=2 / 60),  # 2 minutes later
        payment("v3", 1.0, t=5 / 60),
        payment("v4", 1.0, t=14 / 60),  # 9 min after v3, 12 after v2, 14 after v1
        payment("v5", 1.0, t=70 / 60),  # more than an hour after v1
    ]
    df = with_velocity(spark.createDataFrame(rows, COLUMNS))
    got = {
        r.transaction_id: (r.prior_payments_10m, r.prior_declines_10m, r.prior_payments_1h)
        for r in df.collect()
    }
    assert got == {
        "v1": (0, 0, 0),
        "v2": (1, 1, 1),
        "v3": (2, 2, 2),
        "v4": (1, 0, 3),
        "v5": (0, 0, 1),  # v4 only: 56 minutes before
    }


def test_velocity_state_matches_brute_force():
    import numpy as np

    rng = np.random.default_rng(5)
    codes = rng.integers(0, 4, 300)
    times = rng.integers(0, 3 * 3600_000, 300)
    declined = rng.integers(0, 2, 300)
    old, new = np.arange(200), np.arange(200, 300)

    def by_key(ix):
        return ix[np.lexsort((times[ix], codes[ix]))]

    old, new = by_key(old), by_key(new)
    counts, _ = count_prior(
        codes[old], times[old], declined[old], codes[new], times[new], declined[new]
    )
    for n, i in enumerate(new):
        # kept payments of the customer, and new ones sorted before this one
        earlier = np.concatenate([old, new[:n]])
        same = earlier[codes[earlier] == codes[i]]
        in_10m = same[(times[same] >= times[i] - 600_000) & (times[same] <= times[i])]
        in_1h = same[(times[same] >= times[i] - 3600_000) & (times[same] <= times[i])]
        assert counts["prior_payments_10m"][n] == len(in_10m)
        assert counts["prior_declines_10m"][n] == declined[in_10m].sum()
        assert counts["prior_payments_1h"][n] == len(in_1h)


def test_stream_velocity_equals_training_velocity(spark, tmp_path):
    """The stateful operator over three micro-batches gives what the window functions give."""
    history_df = population(spark, users=5, per_user=30)
    ordered = sorted(history_df.collect(), key=lambda r: r.event_time)
    source = tmp_path / "payments"
    for i in range(3):
        chunk = ordered[i * 50 : (i + 1) * 50]
        spark.createDataFrame(chunk, history_df.schema).write.mode("append").parquet(
            str(source / f"part={i}")
        )
    stream_df = (
        spark.readStream.schema(history_df.schema)
        .option("maxFilesPerTrigger", 2)
        .option("recursiveFileLookup", "true")
        .parquet(str(source))
        .withColumns(
            {
                "card_token": F.lit("tok"),
                "card_last4": F.lit("1111"),
                "merchant": F.lit("m"),
                "merchant_id": F.lit("m-1"),
            }
        )
    )
    with query_sql_conf(spark, QUERY_SQL_CONF):
        query = (
            payment_history_stream(stream_df, BehaviourTokens(5, 6), new_s=1800.0, habit_s=3600.0)
            .writeStream.format("memory")
            .queryName("velocity_test")
            .option("checkpointLocation", str(tmp_path / "ck"))
            .trigger(availableNow=True)
            .start()
        )
    query.awaitTermination()
    assert len([p for p in query.recentProgress if p.numInputRows]) > 1
    columns = ["transaction_id", "prior_payments_10m", "prior_declines_10m", "prior_payments_1h"]
    streamed = {tuple(r) for r in spark.table("velocity_test").select(*columns).collect()}
    expected = {tuple(r) for r in with_velocity(history_df).select(*columns).collect()}
    assert streamed == expected


def test_unusual_hour_against_the_customer_own_hours(spark):
    # u1 pays at 08:00, 09:00, 10:00 and 11:00 (T0 + 0..3 h)
    history_df = spark.createDataFrame(HISTORY, COLUMNS)
    new_df = spark.createDataFrame(
        [
            payment("n1", 10.0, t=-6),  # 02:00: none of the 4 within an hour
            payment("n2", 10.0, t=1.5),  # 09:30: 08:00, 09:00 and 10:00 are
            payment("n3", 10.0, t=16.5),  # 00:30 the next day: none (23:00, 00:00, 01:00)
        ],
        COLUMNS,
    )
    seen = features(as_seen(with_velocity(new_df), customer_profiles(history_df)))
    rows = {r.transaction_id: r for r in seen.collect()}
    expected = 4 * 3 / 24  # 4 payments x the 3 hours of 24 a window spans
    assert rows["n1"].usual_hour_count == 0
    assert rows["n1"].unusual_hour == pytest.approx(expected / math.sqrt(expected + 1))
    assert rows["n2"].usual_hour_count == 3
    assert rows["n2"].unusual_hour == 0.0  # more than a customer paying at any hour
    assert rows["n3"].usual_hour_count == 0  # the window wraps around midnight
    # leave one out: h2 (09:00) against u1's other payments (08:00 and 10:00 are near)
    loo = features(leave_one_out(with_velocity(history_df), customer_profiles(history_df)))
    h2 = loo.filter(F.col("transaction_id") == "h2").first()
    assert h2.usual_hour_count == 2 and h2.usual_n == 3 and h2.unusual_hour == 0.0
    h4 = loo.filter(F.col("transaction_id") == "h4").first()  # 11:00: only 10:00 is near
    assert h4.usual_hour_count == 1 and h4.unusual_hour == 0.0  # 1 > 3 x 3/24


def test_training_leaves_the_hour_out_of_a_short_history():
    from txwatch.training import features_for_span

    two_days = 2 * 86400.0
    assert features_for_span(3 * 86400.0, two_days) == FEATURES
    short = features_for_span(4 * 3600.0, two_days)
    assert "unusual_hour" not in short and len(short) == len(FEATURES) - 1


def days_of_habits(spark, users=30, days=7, seed=5):
    """Customers who pay by day (09:00-19:00), a third of them also by night (22:00-02:00)."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 5)
    rows = []
    for u in range(users):
        night_owl = u % 3 == 0
        usual = rng.uniform(2.0, 4.0)
        home = (48.8 + rng.uniform(0, 0.2), 2.3 + rng.uniform(0, 0.2))
        for day in range(days):
            for i in range(6):
                hour = rng.uniform(22, 26) if night_owl and i < 2 else rng.uniform(9, 19)
                when = start + timedelta(days=day, hours=hour)
                rows.append(habit_payment(rng, f"t{u}-{day}-{i}", u, usual, home, when))
    return spark.createDataFrame(rows, COLUMNS)


def test_a_day_customer_paying_at_night_stands_out_by_the_hour(spark):
    history_df = days_of_habits(spark)
    profiles_df = customer_profiles(history_df)
    seen_df = leave_one_out(with_velocity(history_df), profiles_df).persist()
    # u1 pays by day only
    at = {"n-day": datetime(2026, 1, 12, 13, 0), "n-night": datetime(2026, 1, 13, 0, 30)}
    usual = history_df.filter("transaction_id = 't1-0-0'").first()  # one of u1's own
    new_df = spark.createDataFrame(
        [(tx, *usual[1:-1], t) for tx, t in at.items()], COLUMNS
    )  # that payment again, at 13:00 and at 00:30
    seen_new = as_seen(with_velocity(new_df), profiles_df)
    scores = {}
    for name, features in (("with", FEATURES), ("without", FEATURES[:-1])):
        fitted = model.fit_model(seen_df, 2, seed=1, features=features)
        threshold = model.calibrate_threshold(model.score(fitted, seen_df), 0.99)
        rows = model.score(fitted, seen_new).collect()
        scores[name] = {r.transaction_id: r.outlier_score / threshold for r in rows}
        assert model.model_features(fitted) == features
    assert scores["with"]["n-night"] > 1.0 > scores["with"]["n-day"]
    assert scores["without"]["n-night"] < 1.0  # nothing else about it is unusual
    explained = model.score(
        model.fit_model(seen_df, 2, seed=1), seen_new.filter("transaction_id = 'n-night'")
    ).select(model.explanation().alias("why"))
    assert (
        "at 00:30 UTC, 0 of 42 past payments in the clock hours around it" in explained.first().why
    )
