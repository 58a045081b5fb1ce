#!/usr/bin/env bash
# A single-node Apache Kafka broker in KRaft mode, on loopback, from the Maven Central jars
# that scripts/setup.sh puts in .deps/kafka. Idempotent: start on a running broker and stop
# on a stopped one are no-ops.
#
#   scripts/kafka-local.sh start|stop|status
#
# Environment (all optional):
#   KAFKA_PORT       client port                        (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port        (default KAFKA_PORT + 1)
#   KAFKA_DATA_DIR   logs, config, pid and broker log   (default .kafka-local in the repo)
#   KAFKA_HEAP       JVM heap                           (default 512m)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_LIBS="${KAFKA_LIBS:-$ROOT/.deps/kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$ROOT/.kafka-local}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
PID_FILE="$KAFKA_DATA_DIR/broker.pid"
LOG_FILE="$KAFKA_DATA_DIR/broker.log"
CONFIG_FILE="$KAFKA_DATA_DIR/server.properties"

die() { echo "kafka-local: $*" >&2; exit 1; }
say() { echo "kafka-local: $*"; }

port_open() {  # true when something accepts connections on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

preflight() {
  command -v java >/dev/null 2>&1 || die "java not found on PATH; install a JDK 17 (e.g. apt-get install openjdk-17-jre-headless)"
  compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null \
    || die "no Kafka jars in $KAFKA_LIBS; run scripts/setup.sh (or make setup) first"
}

write_config() {
  mkdir -p "$KAFKA_DATA_DIR/data"
  cat >"$CONFIG_FILE" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA_DIR/data
num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Keep a laptop's disk in check: a week or 2 GiB per partition, whichever comes first.
log.retention.hours=168
log.retention.bytes=2147483648
PROPS
}

java_cmd() {
  java -Xms128m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC \
    "-Dlog4j2.configurationFile=$ROOT/scripts/kafka-log4j2.yaml" \
    -cp "$KAFKA_LIBS/*" "$@"
}

start() {
  preflight
  if pid="$(running_pid)"; then
    say "already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  if port_open "$KAFKA_PORT"; then
    die "port $KAFKA_PORT is taken by another process; stop it or set KAFKA_PORT"
  fi
  if port_open "$KAFKA_CONTROLLER_PORT"; then
    die "controller port $KAFKA_CONTROLLER_PORT is taken; set KAFKA_CONTROLLER_PORT"
  fi
  write_config
  if [[ ! -f "$KAFKA_DATA_DIR/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG_FILE" \
      >>"$LOG_FILE" 2>&1 || die "formatting storage failed; see $LOG_FILE"
  fi
  say "starting broker on 127.0.0.1:$KAFKA_PORT (data in $KAFKA_DATA_DIR)"
  # java itself is the background process, so the pid file names the broker's JVM.
  nohup java -Xms128m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC \
    "-Dlog4j2.configurationFile=$ROOT/scripts/kafka-log4j2.yaml" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$CONFIG_FILE" >>"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 120); do
    if port_open "$KAFKA_PORT"; then
      say "broker is up (pid $(cat "$PID_FILE"))"; return 0
    fi
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      tail -20 "$LOG_FILE" >&2
      die "broker exited during start-up; full log in $LOG_FILE"
    fi
    sleep 0.5
  done
  tail -20 "$LOG_FILE" >&2
  die "broker did not accept connections on port $KAFKA_PORT within 60 s; see $LOG_FILE"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    say "not running"; rm -f "$PID_FILE"; return 0
  fi
  say "stopping broker (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; say "stopped"; return 0; }
    sleep 0.5
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  say "stopped (forced after 30 s)"
}

status() {
  local pid
  if pid="$(running_pid)" && port_open "$KAFKA_PORT"; then
    say "running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
  elif pid="$(running_pid)"; then
    say "process $pid is alive but port $KAFKA_PORT is closed; see $LOG_FILE"; return 1
  else
    say "not running"; return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
