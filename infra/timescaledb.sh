#!/usr/bin/env bash
# PostgreSQL + TimescaleDB on 127.0.0.1:$OBSERVATORY_PG_PORT, as a private
# cluster (own data dir, own socket dir) next to - never instead of - any
# system cluster.
#
#   timescaledb.sh install   install PostgreSQL + TimescaleDB into the system (once)
#   timescaledb.sh start     install if needed, initdb (once), start, create role/db/extension
#   timescaledb.sh stop      stop our cluster; no error if not running
#   timescaledb.sh status    exit 0 if our cluster runs and accepts connections
#   timescaledb.sh version   print "PostgreSQL X / TimescaleDB Y" of the running cluster
#   timescaledb.sh url       print the application's connection URL
#
# Where TimescaleDB comes from:
#   Debian 13 (trixie) packages it: postgresql-17 + postgresql-17-timescaledb.
#   Debian 12 (bookworm) does not, so we build trixie's source package (the
#   Apache-licensed part, which is all Debian ships) against bookworm's
#   PostgreSQL 15. Only Debian's own archive is needed, which CI can reach.
set -euo pipefail
# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PG_PORT=$OBSERVATORY_PG_PORT
PG_SUPERUSER=postgres
DB_NAME=observatory
# Extra databases set up the same way (the test suite uses its own, so that
# `make test` never touches what `make demo` or a user wrote).
: "${OBSERVATORY_PG_EXTRA_DATABASES:=observatory_test}"
DB_USER=observatory
DB_PASSWORD=${OBSERVATORY_PG_PASSWORD:-observatory}
# It goes into SQL and a URL as it is: keep it to characters needing no quoting.
[[ $DB_PASSWORD =~ ^[A-Za-z0-9_.-]+$ ]] || die "OBSERVATORY_PG_PASSWORD may only hold letters, digits, '_', '.' and '-'"
DATABASE_URL="postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME"
INSTALL_LOG="$LOG_DIR/timescaledb.log" # install/build/initdb/pg_ctl output
BUILD_DIR="$INFRA_HOME/build"
PG_PIDFILE="$RUN_DIR/postgres.pid"   # copy of the postmaster pid, for humans and down.sh symmetry
TRIXIE_SRC_LIST=/etc/apt/sources.list.d/observatory-trixie-src.sources
NO_MAIN_CLUSTER_CONF=/etc/postgresql-common/createcluster.d/observatory-no-main-cluster.conf

# ------------------------------------------------------------------ which PostgreSQL

# Sets PG_MAJOR and PG_BIN. Order: the major of an existing data dir (its
# binaries must match), then an installed PostgreSQL that already has
# TimescaleDB, then what apt offers (17 with packaged TimescaleDB on trixie,
# else bookworm's 15 + a source build).
pick_pg_major() {
  [[ -n ${PG_MAJOR:-} ]] && return 0
  if [[ -n ${PGDATA:-} && -f $PGDATA/PG_VERSION ]]; then
    PG_MAJOR=$(<"$PGDATA/PG_VERSION")
  else
    local bin v
    for bin in /usr/lib/postgresql/*/bin/postgres; do
      v=${bin#/usr/lib/postgresql/}
      v=${v%%/*}
      if [[ -x $bin && -f /usr/share/postgresql/$v/extension/timescaledb.control ]] &&
        ((v > ${PG_MAJOR:-0})); then
        PG_MAJOR=$v
      fi
    done
    if [[ -z ${PG_MAJOR:-} ]]; then
      if apt_has postgresql-17-timescaledb; then PG_MAJOR=17; else PG_MAJOR=15; fi
    fi
  fi
  PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
}

timescaledb_installed() {
  local sharedir=/usr/share/postgresql/$PG_MAJOR # Debian's layout, if pg_config is absent
  [[ -x $PG_BIN/pg_config ]] && sharedir=$("$PG_BIN/pg_config" --sharedir)
  [[ -x $PG_BIN/postgres && -f $sharedir/extension/timescaledb.control ]]
}

# ------------------------------------------------------------------ install

build_timescaledb_from_trixie() {
  apt_install "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" \
    dpkg-dev cmake build-essential pkg-config libssl-dev libkrb5-dev

  # deb-src only: nothing from trixie can be installed as a binary package, we
  # just fetch the source. Removed again when the install ends (trap in
  # cmd_install) so later `apt-get update`s on this machine don't keep
  # downloading trixie's source index.
  log "adding a deb-src entry for Debian trixie ($TRIXIE_SRC_LIST)"
  as_root tee "$TRIXIE_SRC_LIST" >/dev/null <<'EOF'
# Added by infra/timescaledb.sh to fetch the timescaledb source package; safe to delete.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  _APT_UPDATED=0 # the new source needs an update even if we ran one already
  apt_update

  local src=$BUILD_DIR/timescaledb
  rm -rf "$src"
  mkdir -p "$src"
  log "downloading the timescaledb source package from trixie…"
  # apt-get source unpacks it (dpkg-source -x, Debian patches applied). No
  # build-dep resolution: the packages above are all the build needs.
  (cd "$src" && run_logged "$INSTALL_LOG" apt-get source --only-source timescaledb/trixie) ||
    die "apt-get source timescaledb/trixie failed (log: $INSTALL_LOG)"

  local dir version
  dir=$(find "$src" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb-*' | head -n1)
  [[ -n $dir ]] || die "no unpacked timescaledb source in $src (log: $INSTALL_LOG)"
  version=${dir##*/timescaledb-}
  log "building TimescaleDB $version from the trixie source package for PostgreSQL $PG_MAJOR (≈30 s)…"
  # APACHE_ONLY: Debian's tarball has the TSL-licensed code stripped out.
  # Regression/TAP test targets would need PostgreSQL's test tooling: off.
  run_logged "$INSTALL_LOG" cmake -S "$dir" -B "$dir/build" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
    -DSEND_TELEMETRY_DEFAULT=OFF \
    -DPG_CONFIG="$PG_BIN/pg_config" ||
    die "configuring TimescaleDB failed (log: $INSTALL_LOG)"
  run_logged "$INSTALL_LOG" make -C "$dir/build" -j"$(nproc)" ||
    die "building TimescaleDB failed (log: $INSTALL_LOG)"
  # Installs into PostgreSQL's lib/share dirs (system-wide, hence root).
  run_logged "$INSTALL_LOG" as_root make -C "$dir/build" install ||
    die "installing TimescaleDB failed (log: $INSTALL_LOG)"
}

do_install() {
  if apt_has "postgresql-$PG_MAJOR-timescaledb"; then
    log "installing PostgreSQL $PG_MAJOR + TimescaleDB from Debian packages…"
    apt_install "postgresql-$PG_MAJOR" "postgresql-$PG_MAJOR-timescaledb"
  else
    build_timescaledb_from_trixie
  fi
}

cmd_install() {
  pick_pg_major
  timescaledb_installed && return 0

  # Installing postgresql-NN normally creates (and, with an init system,
  # starts) a "main" cluster on 5432 that we never use. A createcluster.d
  # drop-in turns that off during our install only; it and the trixie deb-src
  # entry are removed however the install ends, leaving the machine's apt and
  # PostgreSQL policy as they were.
  trap 'as_root rm -f "$NO_MAIN_CLUSTER_CONF" "$TRIXIE_SRC_LIST"' EXIT
  as_root mkdir -p "${NO_MAIN_CLUSTER_CONF%/*}"
  echo 'create_main_cluster = false' | as_root tee "$NO_MAIN_CLUSTER_CONF" >/dev/null
  do_install
  as_root rm -f "$NO_MAIN_CLUSTER_CONF" "$TRIXIE_SRC_LIST"
  trap - EXIT
  timescaledb_installed || die "TimescaleDB is still not installed for PostgreSQL $PG_MAJOR (log: $INSTALL_LOG)"
  log "TimescaleDB installed for PostgreSQL $PG_MAJOR"
}

# ------------------------------------------------------------------ layout

# PostgreSQL refuses to run as root, so as root the server runs as the
# `postgres` system user (created by the postgresql packages); otherwise as the
# current user. Sets PG_RUN_AS, PG_BASE, PGDATA, PG_SOCKET_DIR, PG_LOG.
#
# Where pgdata lives: $OBSERVATORY_INFRA_HOME/pgdata whenever the postgres user
# can reach it. A repo under /root (mode 700) is not reachable, and the
# alternative - chmod o+x on /root or other parents - would silently change
# permissions outside the repo. So in that case only, everything the server
# writes goes to /var/lib/observatory/<hash of the infra home> (one cluster per
# checkout, and the same one again on every run), with a symlink
# $OBSERVATORY_INFRA_HOME/pgdata pointing there so it is still easy to find.
resolve_layout() {
  PG_RUN_AS=
  PG_BASE=$INFRA_HOME
  if is_root; then
    id -u postgres >/dev/null 2>&1 || return 1 # no postgresql installed yet
    PG_RUN_AS=postgres
    if ! (cd / && runuser -u postgres -- test -x "$INFRA_HOME"); then
      PG_BASE=/var/lib/observatory/$(printf '%s' "$INFRA_HOME" | sha256sum | cut -c1-12)
    fi
  fi
  PGDATA=$PG_BASE/pgdata
  PG_SOCKET_DIR=$PG_BASE/run/postgres
  # Unix socket paths are limited to 107 bytes ("<dir>/.s.PGSQL.<port>"); a
  # deeply nested checkout would break startup, so fall back to /tmp then.
  if ((${#PG_SOCKET_DIR} > 85)); then
    PG_SOCKET_DIR=/tmp/observatory-pg-$(printf '%s' "$INFRA_HOME" | sha256sum | cut -c1-12)
  fi
  if [[ $PG_BASE == "$INFRA_HOME" ]]; then
    PG_LOG=$LOG_DIR/postgres.log
  else
    PG_LOG=$PG_BASE/postgres.log
  fi
}

# Make PATHs belong to the server's user (no-op when not root).
own_by_pg() { [[ -z $PG_RUN_AS ]] || chown "$PG_RUN_AS:" "$@"; }

# Run a PostgreSQL program as the server's user. cwd=/ because postgres may
# not be allowed into the caller's cwd (e.g. /root), which makes psql warn.
pg_run() {
  if [[ -n $PG_RUN_AS ]]; then
    (cd / && runuser -u "$PG_RUN_AS" -- "$@")
  else
    "$@"
  fi
}

psql_super() {
  pg_run "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U "$PG_SUPERUSER" "$@"
}

prepare_dirs() {
  mkdir -p "$PG_BASE" "$PG_SOCKET_DIR"
  own_by_pg "$PG_SOCKET_DIR"
  if [[ $PG_BASE != "$INFRA_HOME" ]]; then
    own_by_pg "$PG_BASE"
    ln -sfn "$PG_BASE/pgdata" "$INFRA_HOME/pgdata"
    ln -sfn "$PG_LOG" "$LOG_DIR/postgres.log"
  fi
  # pg_ctl appends the server log as the server's user.
  touch "$PG_LOG"
  own_by_pg "$PG_LOG"
}

init_cluster() {
  [[ -f $PGDATA/PG_VERSION ]] && return 0
  log "creating PostgreSQL $PG_MAJOR cluster in $PGDATA…"
  # initdb into a scratch dir, renamed when complete: a failed initdb never
  # leaves a half-initialised pgdata that later runs would trip over.
  rm -rf "$PGDATA.init"
  mkdir -p "$PGDATA.init"
  own_by_pg "$PGDATA.init"
  # --no-locale: byte-order collation, identical on every machine, no locale
  # packages needed. Superuser is `postgres` whoever runs it.
  run_logged "$INSTALL_LOG" pg_run "$PG_BIN/initdb" -D "$PGDATA.init" -U "$PG_SUPERUSER" \
    --encoding=UTF8 --no-locale --auth-local=trust --auth-host=scram-sha-256 ||
    die "initdb failed (log: $INSTALL_LOG)"
  mv "$PGDATA.init" "$PGDATA"
}

# Rewritten on every start so that knob changes (port) apply on restart.
write_config() {
  cat >"$PGDATA/observatory.conf" <<EOF
# Generated by infra/timescaledb.sh on every start - edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
# Own socket dir: never collides with a system cluster's /var/run/postgresql.
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 100

# Modest memory for a dev/CI box shared with Kafka and the app.
shared_buffers = 256MB
effective_cache_size = 1GB
work_mem = 16MB
maintenance_work_mem = 128MB

shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
# Background jobs (compression, retention, continuous aggregates) + parallel
# query must fit in max_worker_processes.
timescaledb.max_background_workers = 8
max_parallel_workers = 2
max_worker_processes = 16

password_encryption = scram-sha-256
# Same results on every machine regardless of the host's timezone.
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  cat >"$PGDATA/pg_hba.conf" <<EOF
# Generated by infra/timescaledb.sh on every start.
# TYPE  DATABASE  USER             ADDRESS        METHOD
# Local socket (only in our private socket dir): superuser without password,
# used by the scripts; everyone else needs the password.
local   all       $PG_SUPERUSER                   trust
local   all       all                             scram-sha-256
host    all       all              127.0.0.1/32   scram-sha-256
host    all       all              ::1/128        scram-sha-256
EOF
  own_by_pg "$PGDATA/observatory.conf" "$PGDATA/pg_hba.conf"
  grep -qxF "include = 'observatory.conf'" "$PGDATA/postgresql.conf" ||
    printf "\n# Settings managed by infra/timescaledb.sh\ninclude = 'observatory.conf'\n" >>"$PGDATA/postgresql.conf"
}

pg_running() {
  [[ -f $PGDATA/PG_VERSION && -x $PG_BIN/pg_ctl ]] &&
    pg_run "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

# Role, database and extension, each only if absent.
bootstrap_db() {
  local q
  q=$(psql_super -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")
  if [[ -z $q ]]; then
    log "creating role $DB_USER"
    psql_super -d postgres -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'"
  elif [[ -n ${OBSERVATORY_PG_PASSWORD:-} ]]; then
    # An explicit password wins over the one the role was created with (the fault
    # suite picks a fresh one per run, to search its logs and tables for it).
    psql_super -d postgres -c "ALTER ROLE $DB_USER PASSWORD '$DB_PASSWORD'"
  fi
  local db
  for db in $DB_NAME $OBSERVATORY_PG_EXTRA_DATABASES; do
    bootstrap_one_db "$db"
  done
}

bootstrap_one_db() {
  local db=$1 q
  q=$(psql_super -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")
  if [[ -z $q ]]; then
    log "creating database $db"
    psql_super -d postgres -c "CREATE DATABASE \"$db\" OWNER $DB_USER"
  fi
  # After a TimescaleDB upgrade the catalog must be updated before first use;
  # ALTER EXTENSION ... UPDATE has to be the first statement of its session.
  q=$(psql_super -d "$db" -tAc "SELECT installed_version IS NOT NULL AND installed_version <> default_version
                                FROM pg_available_extensions WHERE name = 'timescaledb'")
  if [[ $q == t ]]; then
    log "updating the timescaledb extension in $db"
    psql_super -d "$db" -c "ALTER EXTENSION timescaledb UPDATE"
  fi
  psql_super -d "$db" -c "SET client_min_messages = warning" \
    -c "CREATE EXTENSION IF NOT EXISTS timescaledb"
}

# ------------------------------------------------------------------ commands

cmd_start() {
  cmd_install
  resolve_layout || die "the postgres system user is missing although PostgreSQL is installed"
  pick_pg_major
  if [[ -f $PGDATA/PG_VERSION && $(<"$PGDATA/PG_VERSION") != "$PG_MAJOR" ]]; then
    die "$PGDATA was created by PostgreSQL $(<"$PGDATA/PG_VERSION"), not $PG_MAJOR; delete it to start over"
  fi
  prepare_dirs
  init_cluster
  write_config
  if pg_running; then
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
  else
    port_open "$PG_PORT" && die "port $PG_PORT is already taken by another process (set OBSERVATORY_PG_PORT)"
    log "starting PostgreSQL $PG_MAJOR + TimescaleDB on 127.0.0.1:$PG_PORT (log: $PG_LOG)…"
    printf '\n==== %s: pg_ctl start\n' "$(date '+%F %T')" >>"$INSTALL_LOG"
    # On failure the server log says why; pg_ctl's own output only says "failed".
    if ! pg_run "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 60 start >>"$INSTALL_LOG" 2>&1 </dev/null; then
      show_log_tail "$PG_LOG" 50
      die "PostgreSQL did not start"
    fi
  fi
  head -n1 "$PGDATA/postmaster.pid" >"$PG_PIDFILE"
  bootstrap_db || die "creating role/database/extension failed"
  log "PostgreSQL is up: $DATABASE_URL"
}

# For stop/status: find our cluster without installing anything.
locate_cluster() {
  resolve_layout || return 1
  [[ -f $PGDATA/PG_VERSION ]] || return 1
  pick_pg_major
}

cmd_stop() {
  if ! locate_cluster || ! pg_running; then
    rm -f "$PG_PIDFILE"
    log "PostgreSQL not running"
    return 0
  fi
  log "stopping PostgreSQL…"
  # fast = roll back open transactions and disconnect clients, then a clean
  # shutdown checkpoint (no crash recovery on the next start).
  run_logged "$INSTALL_LOG" pg_run "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop ||
    die "pg_ctl stop failed (log: $INSTALL_LOG)"
  rm -f "$PG_PIDFILE"
  log "PostgreSQL stopped"
}

cmd_version() {
  if ! locate_cluster || ! pg_running; then die "PostgreSQL is not running"; fi
  psql_super -d "$DB_NAME" -tAc "SELECT 'PostgreSQL ' || current_setting('server_version') || ' / TimescaleDB ' ||
    coalesce((SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), 'not installed')"
}

cmd_status() {
  if locate_cluster && pg_running; then
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
      log "PostgreSQL $PG_MAJOR + TimescaleDB: running (pid $(head -n1 "$PGDATA/postmaster.pid")) on 127.0.0.1:$PG_PORT, data $PGDATA"
      return 0
    fi
    log "PostgreSQL: server process exists but 127.0.0.1:$PG_PORT does not accept connections"
    return 1
  fi
  log "PostgreSQL: stopped"
  return 1
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  version) cmd_version ;;
  url) echo "$DATABASE_URL" ;;
  *)
    echo "usage: $0 install|start|stop|status|version|url" >&2
    exit 2
    ;;
esac
