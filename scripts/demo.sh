#!/usr/bin/env bash
# `make demo`: install, start a local Kafka broker, simulate four hours of history, stream
# them, train the outlier model on them, simulate and stream the next hour, look for rings
# of similar accounts, publish a k-anonymous release, summarize, stop.
#
# Starts from a fresh lake (./lake) and fresh topics each time, so the summary compares the
# alerts with this run's ground truth. DEMO_KEEP_LAKE=1 keeps both and appends instead.
# Simulator settings can be passed as DEMO_SIM_ARGS, e.g. DEMO_SIM_ARGS="--users 3000".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONF="${DEMO_CONF:-conf/local.yaml}"
started_at=$(date +%s)
step() { echo; echo "=== demo [$(( $(date +%s) - started_at ))s] $*"; }

step "1/9 setting up (virtualenv, Python packages, Spark and Kafka jars)"
scripts/setup.sh

if [[ -z "${TXWATCH_TOKEN_KEY:-}" ]]; then
  # A throwaway key for simulated cards only; real data needs a real secret.
  export TXWATCH_TOKEN_KEY="txwatch-demo-key-not-for-real-cards"
  echo "demo: TXWATCH_TOKEN_KEY not set; using a demo-only key for the simulated cards"
fi

step "2/9 starting the local Kafka broker"
broker_was_running=0
if scripts/kafka-local.sh status >/dev/null 2>&1; then broker_was_running=1; fi
scripts/kafka-local.sh start
stop_broker() {
  if [[ $broker_was_running -eq 0 ]]; then
    echo; scripts/kafka-local.sh stop
  fi
}
trap stop_broker EXIT

RECREATE=1
if [[ "${DEMO_KEEP_LAKE:-0}" == "1" ]]; then
  RECREATE=0
  echo "demo: DEMO_KEEP_LAKE=1: appending to ./lake and the existing topics"
else
  echo "demo: starting from a fresh lake (./lake removed) and fresh topics; DEMO_KEEP_LAKE=1 appends instead"
  rm -rf "$ROOT/lake"
fi
.venv/bin/python - "$CONF" "$RECREATE" <<'PY'
import sys
from txwatch.infra.config import load_conf
from txwatch.infra.kafka_admin import ensure_topics
conf = load_conf(sys.argv[1])
ensure_topics(conf, recreate=sys.argv[2] == "1")
print(f"demo: topics ready on {conf.kafka.bootstrap_servers}")
PY

START="2026-01-05T11:00:00Z"
step "3/9 simulating users and four hours of their payments (history) into Kafka"
# shellcheck disable=SC2086
./spark-submit.sh simulate --conf "$CONF" --start "$START" --phase history ${DEMO_SIM_ARGS:-}

step "4/9 streaming the history (--available-now: until the backlog is processed)"
./spark-submit.sh stream --conf "$CONF" --available-now

step "5/9 training the outlier model on the history, and indexing its known fraud"
./spark-submit.sh train --conf "$CONF" --until "$START"
# The history's labelled fraud becomes the patterns the stream compares activity with.
./spark-submit.sh similarity --conf "$CONF" --until "$START"

step "6/9 simulating the next hour (phones, payments, injected fraud and incidents)"
# shellcheck disable=SC2086
./spark-submit.sh simulate --conf "$CONF" --start "$START" --phase period ${DEMO_SIM_ARGS:-}

step "7/9 streaming the hour, scored by the model just trained and the known fraud patterns"
./spark-submit.sh stream --conf "$CONF" --available-now

step "8/9 looking for rings of similar accounts (MinHash LSH over the payments)"
./spark-submit.sh similarity --conf "$CONF"

step "9/9 publishing a k-anonymous release of the transactions (Mondrian)"
./spark-submit.sh anonymize --conf "$CONF"

step "summary"
./spark-submit.sh evaluate --conf "$CONF"
echo
echo "demo: finished in $(( $(date +%s) - started_at )) s; the lake is in $ROOT/lake"
