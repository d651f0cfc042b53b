#!/usr/bin/env bash
# Print the state of each service; exit 0 only if all of them are up.
set -euo pipefail
# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

rc=0
bash "$INFRA_DIR/kafka.sh" status || rc=1
bash "$INFRA_DIR/timescaledb.sh" status || rc=1
exit "$rc"
