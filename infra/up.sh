#!/usr/bin/env bash
# Bring up the local services the project needs: Kafka (KRaft, single node) and
# PostgreSQL + TimescaleDB, installing whatever is missing on the first run.
# Idempotent: running it again while everything is up only re-checks.
# Exits non-zero if anything fails. Stop with infra/down.sh.
set -euo pipefail
# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

began=$SECONDS
# Separate processes: each script keeps its own traps and state, and a failure
# in either stops up.sh right there (set -e).
bash "$INFRA_DIR/kafka.sh" start
bash "$INFRA_DIR/timescaledb.sh" start

kafka_version=$(bash "$INFRA_DIR/kafka.sh" version)
pg_versions=$(bash "$INFRA_DIR/timescaledb.sh" version)
database_url=$(bash "$INFRA_DIR/timescaledb.sh" url)

cat <<SUMMARY
[infra] all up in $((SECONDS - began)) s
  Kafka $kafka_version (KRaft single node)   bootstrap servers: 127.0.0.1:$OBSERVATORY_KAFKA_PORT
      topics: $OBSERVATORY_KAFKA_TOPICS ($OBSERVATORY_KAFKA_PARTITIONS partitions)
  $pg_versions   $database_url
  logs: $LOG_DIR   stop with: bash infra/down.sh
SUMMARY
