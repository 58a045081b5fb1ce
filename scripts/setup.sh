#!/usr/bin/env bash
# Installs what txwatch needs on a fresh machine (Python 3.11, Java 17 and Maven present):
#   .venv/            virtualenv with the pinned Python packages (pyproject.toml)
#   .deps/spark-jars  Spark's Kafka connector and Delta Lake jars (scripts/jvm/spark-deps.pom.xml)
#   .deps/kafka       the Apache Kafka broker and its dependencies (scripts/jvm/kafka-broker.pom.xml)
#   .deps/udfs        txwatch's own Spark SQL functions (udfs/jvm), compiled with javac
# Everything comes from PyPI and Maven Central. Idempotent: a step whose inputs did not
# change since it last succeeded is skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "Python 3.11 not found (set PYTHON=/path/to/python3.11)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "$("$PYTHON" --version) found; txwatch needs Python 3.11 (set PYTHON=...)"
command -v java >/dev/null || die "java not found; install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
java -version 2>&1 | grep -q '"17\.' || echo "setup: warning: Spark 4.2 is tested here with Java 17; found: $(java -version 2>&1 | head -1)"
command -v mvn >/dev/null || die "mvn not found; install Maven (apt-get install maven) to fetch the jars"

stamp_ok() {  # stamp_ok NAME FILES... : true when FILES are unchanged since NAME succeeded
  local name="$1"; shift
  [[ -f ".deps/$name.stamp" ]] && [[ "$(cat "$@" | sha256sum)" == "$(cat ".deps/$name.stamp")" ]]
}
stamp_write() { local name="$1"; shift; cat "$@" | sha256sum >".deps/$name.stamp"; }
mkdir -p .deps

if [[ ! -x .venv/bin/python ]]; then
  say "creating virtualenv .venv"
  "$PYTHON" -m venv .venv
fi
if ! stamp_ok python pyproject.toml; then
  say "installing Python packages (pyspark, delta-spark, kafka-python, datasketch, dev tools)"
  # pip's and setuptools' chatter goes to a log; it is shown only when the install fails.
  { .venv/bin/python -m pip install --upgrade pip \
      && .venv/bin/python -m pip install -e ".[dev]"; } >.deps/pip.log 2>&1 \
    || { tail -30 .deps/pip.log >&2; die "pip install failed (log: .deps/pip.log)"; }
  stamp_write python pyproject.toml
fi

resolve_jars() {  # resolve_jars NAME POM TARGET_DIR
  local name="$1" pom="$2" target="$3"
  if stamp_ok "$name" "$pom" && compgen -G "$target/*.jar" >/dev/null; then
    return 0
  fi
  say "resolving $name jars from Maven Central into $target"
  rm -rf "$target"
  mvn --batch-mode --quiet -f "$pom" dependency:copy-dependencies \
    -DoutputDirectory="$target" >".deps/$name.mvn.log" 2>&1 \
    || { tail -20 ".deps/$name.mvn.log" >&2; die "Maven could not resolve $pom (log: .deps/$name.mvn.log)"; }
  stamp_write "$name" "$pom"
}
resolve_jars spark scripts/jvm/spark-deps.pom.xml "$ROOT/.deps/spark-jars"
resolve_jars kafka scripts/jvm/kafka-broker.pom.xml "$ROOT/.deps/kafka"

# txwatch's own Spark SQL functions (udfs/jvm: the HMAC that reads its key on the
# executor), compiled by the JDK against the installed pyspark's jars: the same Spark the
# jobs run, nothing to download. About 2 s.
UDF_SOURCES=(udfs/jvm/io/txwatch/udfs/*.java)
UDF_JAR=.deps/udfs/txwatch-udfs.jar
if ! stamp_ok udfs "${UDF_SOURCES[@]}" pyproject.toml || [[ ! -f "$UDF_JAR" ]]; then
  command -v javac >/dev/null || die "javac not found; install a JDK 17, not only a JRE (apt-get install openjdk-17-jdk-headless)"
  say "compiling txwatch's Spark functions into $UDF_JAR"
  PYSPARK_JARS="$(.venv/bin/python -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
  rm -rf .deps/udfs && mkdir -p .deps/udfs/classes
  javac --release 17 -nowarn -cp "$PYSPARK_JARS/*" -d .deps/udfs/classes "${UDF_SOURCES[@]}" \
    || die "javac could not compile udfs/jvm"
  jar --create --file "$UDF_JAR" -C .deps/udfs/classes .
  stamp_write udfs "${UDF_SOURCES[@]}" pyproject.toml
fi
say "ready: $(ls .deps/spark-jars | wc -l) Spark jars, $(ls .deps/kafka | wc -l) Kafka jars, $(.venv/bin/python --version)"
