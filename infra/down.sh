#!/usr/bin/env bash
# Stop what up.sh started. Only our own processes are touched (Kafka via its
# pid file, PostgreSQL via pg_ctl on our private data dir); anything not
# running is not an error.
set -euo pipefail
# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

rc=0
# Try both even if one fails, then report.
bash "$INFRA_DIR/kafka.sh" stop || rc=1
bash "$INFRA_DIR/timescaledb.sh" stop || rc=1
exit "$rc"
