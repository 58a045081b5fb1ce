#!/usr/bin/env bash
# A Spark standalone cluster on this machine (master and workers on loopback), from the
# pyspark installed in .venv, so the cluster path can be tried on a laptop:
#
#   scripts/spark-cluster.sh start [--workers N] [--cores C] [--memory M]
#   scripts/spark-cluster.sh status
#   scripts/spark-cluster.sh stop
#   ./spark-submit.sh --master spark://127.0.0.1:7077 stream --available-now
#
# start   starts a master and N workers (default 2), each offering C cores (default 1) and
#         M of memory (default 2g) to executors, and waits until every worker has
#         registered. It prints the master URL. A cluster that already runs is left alone.
# status  prints the master URL, its web UI and the workers alive (exit 1 when down).
# stop    stops the workers and the master (their executors with them).
#
# The pyspark wheel ships spark-class but no start-master.sh; spark-class needs SPARK_HOME
# to point at the pyspark package, which this script sets. The master has no
# authentication: anyone on this machine can run code on it. For a single-user machine.
#
# Environment:
#   TXWATCH_CLUSTER_DIR   pid files, logs and worker directories (default .cluster)
#   SPARK_MASTER_PORT     the master's port (default 7077)
#   SPARK_MASTER_WEBUI_PORT  the master's web UI (default 8080); workers pick free ports
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${TXWATCH_CLUSTER_DIR:-$ROOT/.cluster}"
HOST=127.0.0.1
PORT="${SPARK_MASTER_PORT:-7077}"
UI_PORT="${SPARK_MASTER_WEBUI_PORT:-8080}"
MASTER_URL="spark://$HOST:$PORT"
PYTHON="$ROOT/.venv/bin/python"

usage() {
  sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

die() { echo "spark-cluster: $*" >&2; exit 1; }

spark_home() {
  [[ -x "$PYTHON" ]] || die "no $PYTHON: run make setup first"
  "$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'
}

# A pid file whose process is alive and is a Spark daemon (not a pid reused since).
alive() {
  [[ -f "$1" ]] || return 1
  local pid
  pid="$(cat "$1")"
  kill -0 "$pid" 2>/dev/null || return 1
  [[ ! -r "/proc/$pid/cmdline" ]] || tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "org.apache.spark.deploy"
}

# The master's JSON status page: workers alive, cores.
master_json() {
  "$PYTHON" - "$UI_PORT" <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=2) as r:
        print(json.dumps(json.load(r)))
except OSError:
    sys.exit(1)
PY
}

alive_workers() {
  master_json 2>/dev/null | "$PYTHON" -c \
    'import json, sys; print(sum(w["state"] == "ALIVE" for w in json.load(sys.stdin)["workers"]))' \
    2>/dev/null || echo 0
}

start() {
  local workers=2 cores=1 memory=2g
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --workers) workers="${2:?--workers needs a number}"; shift 2 ;;
      --cores) cores="${2:?--cores needs a number}"; shift 2 ;;
      --memory) memory="${2:?--memory needs a size, e.g. 2g}"; shift 2 ;;
      -h|--help) usage 0 ;;
      *) echo "spark-cluster: unknown option $1" >&2; usage ;;
    esac
  done
  [[ "$workers" =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive number, not '$workers'"
  [[ "$cores" =~ ^[1-9][0-9]*$ ]] || die "--cores must be a positive number, not '$cores'"
  if alive "$DIR/master.pid"; then
    echo "spark-cluster: already running at $MASTER_URL ($(alive_workers) workers alive); stop it first to change it"
    return 0
  fi
  local home
  home="$(spark_home)"
  mkdir -p "$DIR"
  stop >/dev/null  # workers left over from a master that died would join the new one
  # A start that fails (or is interrupted) half way stops what it started.
  trap 'stop >/dev/null' EXIT
  trap 'exit 1' INT TERM
  export SPARK_HOME="$home" SPARK_LOCAL_IP="$HOST" SPARK_LOG_DIR="$DIR"
  # Executors run the job's Python code with the interpreter the driver names
  # (spark-submit.sh passes .venv's); this one is for the daemons' own needs only.
  export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PYTHON}"
  nohup "$home/bin/spark-class" org.apache.spark.deploy.master.Master \
    --host "$HOST" --port "$PORT" --webui-port "$UI_PORT" \
    >"$DIR/master.log" 2>&1 &
  echo $! >"$DIR/master.pid"
  local deadline=$((SECONDS + 60))
  until master_json >/dev/null 2>&1; do
    alive "$DIR/master.pid" || die "the master stopped; see $DIR/master.log"
    ((SECONDS < deadline)) || die "the master did not answer within 60 s; see $DIR/master.log"
    sleep 0.5
  done
  for ((i = 1; i <= workers; i++)); do
    mkdir -p "$DIR/work-$i"
    nohup "$home/bin/spark-class" org.apache.spark.deploy.worker.Worker \
      --host "$HOST" --cores "$cores" --memory "$memory" --webui-port 0 \
      --work-dir "$DIR/work-$i" "$MASTER_URL" \
      >"$DIR/worker-$i.log" 2>&1 &
    echo $! >"$DIR/worker-$i.pid"
  done
  deadline=$((SECONDS + 90))
  until [[ "$(alive_workers)" -ge "$workers" ]]; do
    ((SECONDS < deadline)) || die "only $(alive_workers) of $workers workers registered within 90 s; see $DIR/worker-*.log"
    sleep 0.5
  done
  trap - EXIT INT TERM
  echo "spark-cluster: master $MASTER_URL (web UI http://$HOST:$UI_PORT), $workers workers x $cores cores x $memory"
  echo "spark-cluster: ./spark-submit.sh --master $MASTER_URL <job> ...; logs in $DIR"
}

status() {
  local file daemons=0
  shopt -s nullglob
  for file in "$DIR"/worker-*.pid; do
    if alive "$file"; then daemons=$((daemons + 1)); fi
  done
  shopt -u nullglob
  if alive "$DIR/master.pid"; then
    echo "spark-cluster: master $MASTER_URL (web UI http://$HOST:$UI_PORT), $(alive_workers) workers alive"
    return 0
  fi
  if ((daemons)); then
    echo "spark-cluster: no master, but $daemons worker processes from $DIR run; scripts/spark-cluster.sh stop"
  else
    echo "spark-cluster: not running (no master from $DIR)"
  fi
  return 1
}

stop_pid() {
  local file="$1" pid
  alive "$file" || { rm -f "$file"; return 0; }
  pid="$(cat "$file")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    alive "$file" || break
    sleep 0.25
  done
  if alive "$file"; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$file"
}

stop() {
  local any=0 file
  shopt -s nullglob
  for file in "$DIR"/worker-*.pid "$DIR/master.pid"; do
    [[ -f "$file" ]] && any=1
    stop_pid "$file"
  done
  shopt -u nullglob
  if ((any)); then echo "spark-cluster: stopped"; else echo "spark-cluster: not running"; fi
}

case "${1:-}" in
  start) shift; start "$@" ;;
  status) status ;;
  stop) stop ;;
  -h|--help) usage 0 ;;
  *) usage ;;
esac
