#!/usr/bin/env bash
# The one entry point for every txwatch job, on a laptop or a cluster:
#
#   ./spark-submit.sh <job> [job arguments...]
#   ./spark-submit.sh --master spark://host:7077 stream --conf conf/cluster.yaml
#
# Jobs: stream, simulate, replay, train, similarity, anonymize, evaluate, sql, maintain. `./spark-submit.sh <job> --help` lists a
# job's arguments.
#
# Options before the job name:
#   --master URL   Spark master (default $SPARK_MASTER, else local[*])
#   --spark-conf K=V   extra Spark setting, repeatable (passed as spark-submit --conf)
# Environment:
#   SPARK_MASTER        default master
#   SPARK_SUBMIT        spark-submit to use (default: the one in .venv, else on PATH)
#   SPARK_SUBMIT_OPTS_EXTRA  more spark-submit options, e.g. "--deploy-mode cluster"
#   TXWATCH_TOKEN_KEY   secret key for card and identifier tokens (stream, train, similarity, evaluate)
#
# The Kafka connector and Delta jars from .deps/spark-jars and txwatch's own functions
# (.deps/udfs, compiled by setup) go with --jars, and jobs/, udfs/, txwatch/
# and conf/ are shipped as a zip (--py-files) and as files, so executors on a cluster have
# the same code and config as the driver.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JOBS=(stream simulate replay train similarity anonymize evaluate sql maintain)

usage() {
  sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

MASTER="${SPARK_MASTER:-local[*]}"
SPARK_CONFS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --master) MASTER="${2:?--master needs a URL}"; shift 2 ;;
    --master=*) MASTER="${1#--master=}"; shift ;;
    --spark-conf) SPARK_CONFS+=(--conf "${2:?--spark-conf needs K=V}"); shift 2 ;;
    -h|--help) usage 0 ;;
    -*) echo "spark-submit.sh: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done

JOB="${1:-}"
if [[ -z "$JOB" ]]; then
  echo "spark-submit.sh: no job given" >&2; usage
fi
shift
if [[ ! " ${JOBS[*]} " == *" $JOB "* ]]; then
  echo "spark-submit.sh: unknown job '$JOB' (jobs: ${JOBS[*]})" >&2; usage
fi

if [[ -n "${SPARK_SUBMIT:-}" ]]; then
  SUBMIT="$SPARK_SUBMIT"
elif [[ -x "$ROOT/.venv/bin/spark-submit" ]]; then
  SUBMIT="$ROOT/.venv/bin/spark-submit"
  export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$ROOT/.venv/bin/python}"
  export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$ROOT/.venv/bin/python}"
else
  SUBMIT="$(command -v spark-submit || true)"
fi
[[ -n "$SUBMIT" ]] || { echo "spark-submit.sh: no spark-submit found; run make setup" >&2; exit 1; }

shopt -s nullglob
JARS=("$ROOT"/.deps/spark-jars/*.jar)
shopt -u nullglob
UDF_JAR="$ROOT/.deps/udfs/txwatch-udfs.jar"
if [[ ${#JARS[@]} -eq 0 || ! -f "$UDF_JAR" ]]; then
  echo "spark-submit.sh: no jars in .deps/spark-jars or no .deps/udfs/txwatch-udfs.jar; run make setup (scripts/setup.sh)" >&2
  exit 1
fi
JARS+=("$UDF_JAR")
JARS_CSV="$(IFS=,; echo "${JARS[*]}")"

# Package the code for the executors; rebuilt on every submit so it always matches.
BUILD="$ROOT/.deps/build"
mkdir -p "$BUILD"
(cd "$ROOT" && rm -f "$BUILD/txwatch.zip" && "${PYTHON_FOR_ZIP:-python3}" - "$BUILD/txwatch.zip" <<'PY'
import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as zf:
    for package in ("jobs", "udfs", "txwatch"):
        for path in sorted(pathlib.Path(package).rglob("*.py")):
            zf.write(path)
PY
)
CONF_FILES="$(ls "$ROOT"/conf/*.yaml "$ROOT"/conf/fairscheduler.xml | paste -sd, -)"

# The driver's heap must be set before its JVM starts: spark.driver.memory from the job's
# config (spark.options) goes to --driver-memory; set in the session builder it is ignored.
JOB_CONF="conf/local.yaml"
prev=""
for arg in "$@"; do
  [[ "$prev" == "--conf" ]] && JOB_CONF="$arg"
  [[ "$arg" == --conf=* ]] && JOB_CONF="${arg#--conf=}"
  prev="$arg"
done
DRIVER_MEMORY_OPTS=()
PYTHON_FOR_CONF="$ROOT/.venv/bin/python"
[[ -x "$PYTHON_FOR_CONF" ]] || PYTHON_FOR_CONF=python3
if DRIVER_MEMORY="$(cd "$ROOT" && PYTHONPATH="$ROOT" "$PYTHON_FOR_CONF" -c \
    'import sys; from txwatch.infra.config import load_conf; print(load_conf(sys.argv[1]).spark.options.get("spark.driver.memory", ""))' \
    "$JOB_CONF" 2>/dev/null)" && [[ -n "$DRIVER_MEMORY" ]]; then
  DRIVER_MEMORY_OPTS=(--driver-memory "$DRIVER_MEMORY")
fi

LOG4J="${TXWATCH_LOG4J:-$ROOT/conf/log4j2.properties}"
if [[ "$MASTER" == local* ]]; then
  export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
fi

export TXWATCH_SUBMITTED=1
# The checkout, for what the code (run from a zip) needs beside it: scripts/kafka-local.sh.
export TXWATCH_ROOT="$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
# shellcheck disable=SC2086
exec "$SUBMIT" \
  --master "$MASTER" \
  --name "txwatch-$JOB" \
  --jars "$JARS_CSV" \
  --py-files "$BUILD/txwatch.zip" \
  --files "$CONF_FILES" \
  --conf spark.sql.session.timeZone=UTC \
  --conf "spark.scheduler.allocation.file=file://$ROOT/conf/fairscheduler.xml" \
  --driver-java-options "-Dlog4j2.configurationFile=file:$LOG4J" \
  --conf "spark.executorEnv.TXWATCH_SUBMITTED=1" \
  ${DRIVER_MEMORY_OPTS[@]+"${DRIVER_MEMORY_OPTS[@]}"} \
  ${SPARK_CONFS[@]+"${SPARK_CONFS[@]}"} \
  ${SPARK_SUBMIT_OPTS_EXTRA:-} \
  "$ROOT/jobs/$JOB.py" "$@"
