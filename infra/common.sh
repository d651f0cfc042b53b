# shellcheck shell=bash
# Shared settings and helpers for the infra scripts. Sourced, never executed:
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#
# Environment knobs (all optional):
#   OBSERVATORY_INFRA_HOME             where everything is installed/cached (default <repo>/.infra)
#   OBSERVATORY_KAFKA_PORT             broker (PLAINTEXT) port on 127.0.0.1   (default 9092)
#   OBSERVATORY_KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1    (default 9093)
#   OBSERVATORY_KAFKA_PARTITIONS       partitions of created/auto-created topics (default 4)
#   OBSERVATORY_KAFKA_TOPICS           topics created by `kafka.sh topics`
#                                      (default "otlp_spans otlp_metrics observatory.dlq")
#   OBSERVATORY_KAFKA_HEAP             broker JVM heap flags (default "-Xms256m -Xmx768m")
#   OBSERVATORY_KAFKA_START_TIMEOUT    seconds `kafka.sh start` waits for the broker (default 60)
#   OBSERVATORY_MAVEN_REPO             Maven repository the Kafka jars are fetched into
#                                      (default <infra home>/m2; a second instance, e.g. the
#                                      fault suite's, points it at the first one's to skip downloads)
#   OBSERVATORY_PG_PORT                PostgreSQL port on 127.0.0.1           (default 5433)
#   OBSERVATORY_PG_EXTRA_DATABASES     more databases set up like `observatory` (default observatory_test)
#   OBSERVATORY_PG_PASSWORD            password of the `observatory` role (default observatory);
#                                      when set, every start (re)applies it to the role
#   JAVA_HOME                          JDK/JRE (>= 17) to run Kafka with (default: `java` on PATH)

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$INFRA_DIR/.." && pwd)"

: "${OBSERVATORY_INFRA_HOME:=$REPO_ROOT/.infra}"
: "${OBSERVATORY_KAFKA_PORT:=9092}"
: "${OBSERVATORY_KAFKA_CONTROLLER_PORT:=9093}"
: "${OBSERVATORY_KAFKA_PARTITIONS:=4}"
: "${OBSERVATORY_KAFKA_TOPICS:=otlp_spans otlp_metrics observatory.dlq}"
: "${OBSERVATORY_KAFKA_HEAP:=-Xms256m -Xmx768m}"
: "${OBSERVATORY_KAFKA_START_TIMEOUT:=60}"
: "${OBSERVATORY_PG_PORT:=5433}"

# The postgres user may need to traverse the infra home (see timescaledb.sh), so
# a restrictive umask must not decide where pgdata ends up: the dirs we create
# get mode 755 explicitly. A pre-existing infra home is left as it is.
if [[ ! -d $OBSERVATORY_INFRA_HOME ]]; then
  mkdir -p "$OBSERVATORY_INFRA_HOME"
  chmod 755 "$OBSERVATORY_INFRA_HOME"
fi
# Resolve to an absolute path once, so pid files, configs and the postgres user
# (which runs with cwd=/) all agree on the same location.
INFRA_HOME="$(cd "$OBSERVATORY_INFRA_HOME" && pwd)"
LOG_DIR="$INFRA_HOME/logs"
RUN_DIR="$INFRA_HOME/run"
mkdir -p "$LOG_DIR" "$RUN_DIR"
chmod 755 "$LOG_DIR" "$RUN_DIR"

# ---------------------------------------------------------------- output

log() { printf '[infra] %s\n' "$*"; }
warn() { printf '[infra] WARNING: %s\n' "$*" >&2; }
die() {
  printf '[infra] ERROR: %s\n' "$*" >&2
  exit 1
}

# Print the last N lines of a log file to stderr (used whenever a step fails,
# since the verbose output went to the file instead of the terminal).
show_log_tail() {
  local file=$1 lines=${2:-50}
  [[ -s $file ]] || return 0
  printf '[infra] ---- last %s lines of %s ----\n' "$lines" "$file" >&2
  tail -n "$lines" "$file" >&2
  printf '[infra] ---- end of %s ----\n' "$file" >&2
}

# run_logged LOGFILE CMD... : run CMD with all output appended to LOGFILE; on
# failure show the log tail and return CMD's status.
run_logged() {
  local logfile=$1
  shift
  printf '\n==== %s: %s\n' "$(date '+%F %T')" "$*" >>"$logfile"
  local rc=0
  "$@" >>"$logfile" 2>&1 </dev/null || rc=$?
  if ((rc != 0)); then
    printf '[infra] ERROR: command failed (exit %s): %s\n' "$rc" "$*" >&2
    show_log_tail "$logfile" 50
  fi
  return "$rc"
}

# ---------------------------------------------------------------- privileges

is_root() { [[ $(id -u) -eq 0 ]]; }

# System-level changes (apt, /etc) need root; without it go through sudo.
as_root() {
  if is_root; then
    "$@"
  else
    command -v sudo >/dev/null || die "need root (or sudo) for: $*"
    sudo "$@"
  fi
}

# ---------------------------------------------------------------- apt

APT_LOG="$LOG_DIR/apt.log"
_APT_UPDATED=0

# `apt-get update` at most once per script run, and only when something is
# actually missing: cached runs never touch the network.
apt_update() {
  ((_APT_UPDATED)) && return 0
  log "refreshing apt package lists…"
  # A broken third-party source must not block installing Debian packages, so
  # failures here are only a warning; a later install reports the real error.
  run_logged "$APT_LOG" as_root env DEBIAN_FRONTEND=noninteractive apt-get update ||
    warn "apt-get update reported errors (see $APT_LOG); continuing"
  _APT_UPDATED=1
}

pkg_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# apt_install PKG... : install whichever of PKG are not installed yet.
apt_install() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  apt_update
  log "installing apt packages: ${missing[*]}"
  run_logged "$APT_LOG" as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
}

# apt_has PKG : does apt know a candidate for PKG? (refreshes lists first if
# they have never been fetched on this machine)
apt_has() {
  local cand
  cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [[ -z $cand ]] && ((!_APT_UPDATED)); then
    apt_update
    cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
  fi
  [[ -n $cand && $cand != "(none)" ]]
}

# ---------------------------------------------------------------- processes

# pid_alive PIDFILE [PATTERN] : true if the pid in PIDFILE is running and (when
# given) its command line contains PATTERN. The pattern guards against a stale
# pid file whose number was reused by an unrelated process.
pid_alive() {
  local pidfile=$1 pattern=${2:-} pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -n $pattern ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
  fi
}

# port_open PORT [HOST] : does something accept TCP connections there?
port_open() {
  local port=$1 host=${2:-127.0.0.1}
  timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

# ---------------------------------------------------------------- Java / Maven

# Kafka 4.x needs Java >= 17. Prefer $JAVA_HOME, then `java` on PATH; install
# Debian's default JRE (17 on bookworm, 21 on trixie) only if neither qualifies.
java_major() {
  "$1" -XshowSettings:properties -version 2>&1 |
    awk -F'= ' '/java.specification.version/ {print $2; exit}' | cut -d. -f1
}

ensure_java() {
  local candidate version
  for candidate in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)"; do
    [[ -n $candidate && -x $candidate ]] || continue
    version=$(java_major "$candidate" || true)
    if [[ $version =~ ^[0-9]+$ ]] && ((version >= 17)); then
      JAVA=$candidate
      return 0
    fi
  done
  apt_install default-jre-headless
  JAVA=/usr/lib/jvm/default-java/bin/java
  [[ -x $JAVA ]] || JAVA=$(command -v java || true)
  version=$(java_major "$JAVA" || true)
  if ! [[ $version =~ ^[0-9]+$ ]] || ((version < 17)); then
    die "no Java >= 17 available (set JAVA_HOME)"
  fi
}

ensure_maven() {
  command -v mvn >/dev/null || apt_install maven
}
