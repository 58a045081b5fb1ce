#!/usr/bin/env bash
# The one entry point for every txwatch job, on a laptop or a cluster:
#
#   ./spark-submit.sh <job> [job arguments...]
#   ./spark-submit.sh --master spark://host:7077 stream --conf conf/cluster.yaml
#   ./spark-submit.sh stream --available-now --master spark://127.0.0.1:7077
#
# Jobs: stream, simulate, replay, train, similarity, anonymize, evaluate, sql, thriftserver,
# maintain.
# `./spark-submit.sh <job> --help` lists a job's arguments.
#
# Options, before or after the job name (everything else goes to the job):
#   --master URL            Spark master: local[*] (default, or $SPARK_MASTER), spark://,
#                           yarn, k8s://
#   --deploy-mode MODE      client (default) or cluster (yarn and k8s; Spark's standalone
#                           master runs Python drivers in client mode only)
#   --driver-memory M       --driver-cores N  --executor-memory M  --executor-cores N
#   --total-executor-cores N (standalone)  --num-executors N (yarn, k8s)
#                           sizes; default: spark.driver.memory, spark.driver.cores,
#                           spark.executor.memory, spark.executor.cores in the job's config
#                           (spark.options), passed where they take effect; the config's
#                           spark.driver.extraJavaOptions goes to --driver-java-options
#   --spark-conf K=V        extra Spark setting, repeatable (spark-submit --conf)
#   --files F[,F...]        more files for the driver's and executors' directories
#                           (e.g. a Kafka truststore), repeatable
#   --                      the rest goes to the job as it is
# Environment:
#   SPARK_MASTER        default master
#   SPARK_SUBMIT        spark-submit to use (default: the one in .venv, else on PATH)
#   SPARK_SUBMIT_OPTS_EXTRA  more spark-submit options, e.g. "--archives env.tar.gz#env"
#                       (not --deploy-mode or --files: use the options above)
#   TXWATCH_TOKEN_KEY   secret key for card and identifier tokens (stream, train,
#                       similarity, evaluate); the job hands it to its executors itself
#
# The Kafka connector and Delta jars from .deps/spark-jars and txwatch's own functions
# (.deps/udfs, compiled by setup) go with --jars, and jobs/, udfs/, txwatch/
# and conf/ are shipped as a zip (--py-files) and as files, so executors on a cluster have
# the same code and config as the driver. docs/deploy.md: running on a cluster.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JOBS=(stream simulate replay train similarity anonymize evaluate sql thriftserver maintain)

usage() {
  sed -n '2,38p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

MASTER="${SPARK_MASTER:-local[*]}"
DEPLOY_MODE=client
SPARK_CONFS=()
SIZE_OPTS=()  # flag value flag value ...: sizes given on the command line, then the conf's
EXTRA_FILES=""
JOB=""
JOB_ARGS=()

has_size() {  # has_size FLAG: was FLAG given already?
  local i
  for ((i = 0; i < ${#SIZE_OPTS[@]}; i += 2)); do
    [[ "${SIZE_OPTS[i]}" == "$1" ]] && return 0
  done
  return 1
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --) shift; JOB_ARGS+=("$@"); break ;;
    --master) MASTER="${2:?--master needs a URL}"; shift 2 ;;
    --master=*) MASTER="${1#--master=}"; shift ;;
    --deploy-mode) DEPLOY_MODE="${2:?--deploy-mode needs client or cluster}"; shift 2 ;;
    --deploy-mode=*) DEPLOY_MODE="${1#--deploy-mode=}"; shift ;;
    --driver-memory|--driver-cores|--executor-memory|--executor-cores|--total-executor-cores|--num-executors)
      SIZE_OPTS+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --spark-conf) SPARK_CONFS+=(--conf "${2:?--spark-conf needs K=V}"); shift 2 ;;
    --spark-conf=*) SPARK_CONFS+=(--conf "${1#--spark-conf=}"); shift ;;
    --files) EXTRA_FILES="$EXTRA_FILES,${2:?--files needs a file}"; shift 2 ;;
    -h|--help)
      # Before the job: this script's help; after it: the job's own.
      if [[ -z "$JOB" ]]; then usage 0; fi
      JOB_ARGS+=("$1"); shift ;;
    *)
      if [[ -z "$JOB" ]]; then
        if [[ "$1" == -* ]]; then
          echo "spark-submit.sh: unknown option $1 before the job name" >&2; usage
        fi
        JOB="$1"
      else
        JOB_ARGS+=("$1")
      fi
      shift ;;
  esac
done
case " ${SPARK_SUBMIT_OPTS_EXTRA:-} " in
  *" --deploy-mode"*|*" --files"*)
    echo "spark-submit.sh: pass --deploy-mode and --files as options of this script, not in SPARK_SUBMIT_OPTS_EXTRA (spark-submit keeps only the last of each)" >&2
    exit 2 ;;
esac

if [[ -z "$JOB" ]]; then
  echo "spark-submit.sh: no job given" >&2; usage
fi
if [[ ! " ${JOBS[*]} " == *" $JOB "* ]]; then
  echo "spark-submit.sh: unknown job '$JOB' (jobs: ${JOBS[*]})" >&2; usage
fi
case "$DEPLOY_MODE" in
  client) ;;
  cluster)
    if [[ "$MASTER" == local* || "$MASTER" == spark://* ]]; then
      echo "spark-submit.sh: --deploy-mode cluster needs a yarn or k8s:// master: Spark runs Python drivers on $MASTER in client mode only" >&2
      exit 2
    fi ;;
  *) echo "spark-submit.sh: --deploy-mode must be client or cluster, not '$DEPLOY_MODE'" >&2; exit 2 ;;
esac
set -- ${JOB_ARGS[@]+"${JOB_ARGS[@]}"}

# sql on this machine answers in about a second through a running Thrift server: it starts
# as plain Python (no spark-submit JVM first) and starts Spark itself only when no server
# answers (txwatch.infra.session adds the jars then).
if [[ "$JOB" == sql && "$MASTER" == local* && "$DEPLOY_MODE" == client && ${#SIZE_OPTS[@]} -eq 0 \
      && ${#SPARK_CONFS[@]} -eq 0 && -z "$EXTRA_FILES" && -z "${SPARK_SUBMIT_OPTS_EXTRA:-}" \
      && -x "$ROOT/.venv/bin/python" ]]; then
  export SPARK_MASTER="$MASTER"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  cd "$ROOT"
  exec "$ROOT/.venv/bin/python" -m jobs.sql "$@"
fi

if [[ -n "${SPARK_SUBMIT:-}" ]]; then
  SUBMIT="$SPARK_SUBMIT"
elif [[ -x "$ROOT/.venv/bin/spark-submit" ]]; then
  SUBMIT="$ROOT/.venv/bin/spark-submit"
  if [[ "$DEPLOY_MODE" == client ]]; then
    # A driver on a cluster node (cluster mode) has no .venv: the image's or the packed
    # environment's Python applies there (docs/deploy.md).
    export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$ROOT/.venv/bin/python}"
    export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$ROOT/.venv/bin/python}"
  fi
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
CONF_FILES="$(ls "$ROOT"/conf/*.yaml "$ROOT"/conf/fairscheduler.xml "$ROOT"/conf/log4j2.properties | paste -sd, -)$EXTRA_FILES"

# The driver's heap must be set before its JVM starts: spark.driver.memory from the job's
# config (spark.options) goes to --driver-memory (set in the session builder it is
# ignored), and the other sizes go the same way, so a cluster's resource manager sees them
# when it places the driver and executors. A flag on the command line wins.
# spark.driver.extraJavaOptions is ignored there too: it goes to --driver-java-options,
# after the log settings.
JOB_CONF="conf/local.yaml"
prev=""
for arg in "$@"; do
  [[ "$prev" == "--conf" ]] && JOB_CONF="$arg"
  [[ "$arg" == --conf=* ]] && JOB_CONF="${arg#--conf=}"
  prev="$arg"
done
PYTHON_FOR_CONF="$ROOT/.venv/bin/python"
[[ -x "$PYTHON_FOR_CONF" ]] || PYTHON_FOR_CONF=python3
# "flag value" lines for the sizes the config sets (an unreadable config: none; the job
# itself reports what is wrong with it).
conf_sizes() {
  cd "$ROOT" && PYTHONPATH="$ROOT" "$PYTHON_FOR_CONF" - "$JOB_CONF" 2>/dev/null <<'PY'
import sys
from txwatch.infra.config import raw_settings
settings = raw_settings(sys.argv[1])
options = settings.get("spark", {}).get("options") or {}
for what in ("driver.memory", "driver.cores", "executor.memory", "executor.cores"):
    if options.get(f"spark.{what}"):
        print("--" + what.replace(".", "-"), options[f"spark.{what}"])
if options.get("spark.driver.extraJavaOptions"):
    print("java-options", options["spark.driver.extraJavaOptions"])
print("token-key-env", settings.get("privacy", {}).get("token_key_env", "TXWATCH_TOKEN_KEY"))
PY
}
TOKEN_KEY_ENV=TXWATCH_TOKEN_KEY
CONF_JAVA_OPTIONS=""
while read -r flag value; do
  if [[ "$flag" == token-key-env ]]; then
    TOKEN_KEY_ENV="$value"
  elif [[ "$flag" == java-options ]]; then
    CONF_JAVA_OPTIONS="$value"
  elif [[ -n "$flag" ]] && ! has_size "$flag"; then
    SIZE_OPTS+=("$flag" "$value")
  fi
done <<<"$(conf_sizes || true)"
if [[ "$JOB" == sql || "$JOB" == thriftserver ]]; then
  # Reading the catalog needs no token key, and whoever can send SQL could read the driver's
  # environment (reflect('java.lang.System', 'getenv', ...)): these jobs start without it.
  unset "$TOKEN_KEY_ENV"
fi

LOG4J="file:${TXWATCH_LOG4J:-$ROOT/conf/log4j2.properties}"
SCHEDULER_FILE="file://$ROOT/conf/fairscheduler.xml"
DRIVER_ENV=()
if [[ "$DEPLOY_MODE" == cluster ]]; then
  # The driver runs on a cluster node, in a directory where --files put conf/'s files, and
  # without this shell's environment: what it needs from it goes as driver environment.
  # Secrets (the token key, Kafka credentials) do not: they would be on this command line.
  LOG4J=log4j2.properties
  SCHEDULER_FILE=fairscheduler.xml
  for var in TXWATCH_SUBMITTED=1 ${TXWATCH_LAKE_ROOT:+TXWATCH_LAKE_ROOT=$TXWATCH_LAKE_ROOT} \
      ${TXWATCH_KAFKA_BOOTSTRAP:+TXWATCH_KAFKA_BOOTSTRAP=$TXWATCH_KAFKA_BOOTSTRAP}; do
    DRIVER_ENV+=(--conf "spark.yarn.appMasterEnv.$var" --conf "spark.kubernetes.driverEnv.$var")
  done
fi
if [[ "$JOB" == thriftserver ]]; then
  # The Thrift server plans its clients' queries on threads of its own, which do not see
  # what --jars adds (Delta's classes: NoClassDefFoundError): the driver's own class path does.
  SPARK_CONFS+=(--driver-class-path "$(IFS=:; echo "${JARS[*]}")")
fi
if [[ "$MASTER" == local* ]]; then
  export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
fi

# Spark splits the driver's Java options like a shell: a checkout path with spaces is quoted.
printf -v LOG4J_OPTION '%q' "-Dlog4j2.configurationFile=$LOG4J"

export TXWATCH_SUBMITTED=1
# The checkout, for what the code (run from a zip) needs beside it: scripts/kafka-local.sh.
export TXWATCH_ROOT="$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
# shellcheck disable=SC2086
exec "$SUBMIT" \
  --master "$MASTER" \
  --deploy-mode "$DEPLOY_MODE" \
  --name "txwatch-$JOB" \
  --jars "$JARS_CSV" \
  --py-files "$BUILD/txwatch.zip" \
  --files "$CONF_FILES" \
  --conf spark.sql.session.timeZone=UTC \
  --conf "spark.scheduler.allocation.file=$SCHEDULER_FILE" \
  --driver-java-options "$LOG4J_OPTION${CONF_JAVA_OPTIONS:+ $CONF_JAVA_OPTIONS}" \
  --conf "spark.executorEnv.TXWATCH_SUBMITTED=1" \
  ${DRIVER_ENV[@]+"${DRIVER_ENV[@]}"} \
  ${SIZE_OPTS[@]+"${SIZE_OPTS[@]}"} \
  ${SPARK_CONFS[@]+"${SPARK_CONFS[@]}"} \
  ${SPARK_SUBMIT_OPTS_EXTRA:-} \
  "$ROOT/jobs/$JOB.py" "$@"
