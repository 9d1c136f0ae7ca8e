#!/usr/bin/env bash
# A private PostgreSQL server for usersync's external store (`--store=postgres`).
#
#   tests/postgres.sh up [DIR]        create (first time) and start; reuse a running one
#   tests/postgres.sh down [DIR]      stop it (fast shutdown; data is kept)
#   tests/postgres.sh status [DIR]    exit 0 when running
#   tests/postgres.sh env [DIR]       print `export USERSYNC_POSTGRES_DSN=...` and the CA's
#                                     path as USERSYNC_POSTGRES_TEST_CA (eval it)
#   tests/postgres.sh psql [ARG...]   psql as the database superuser (over the socket)
#   tests/postgres.sh destroy [DIR]   stop and delete the state directory
#
# DIR defaults to $USERSYNC_POSTGRES_DIR, else "$(usersync_state_dir)/postgres"
# ($USERSYNC_STATE or /tmp/usersync-dev). It listens on 127.0.0.1 only, port
# $USERSYNC_POSTGRES_PORT (15432), and on a Unix socket in DIR for `psql`.
#
# The cluster is made with initdb (Debian's postgresql package) and password
# authentication (scram-sha-256) for TCP, with TLS offered (a CA made here, DIR/ca.crt;
# the server certificate names 127.0.0.1 and localhost) but not required. A role `usersync` with a generated password
# (DIR/usersync.pw, mode 600) owns the database `usersync`; it may create databases,
# so that each test can work in a database of its own. `env` prints the connection
# string the operator takes from USERSYNC_POSTGRES_DSN.
#
# PostgreSQL refuses to run as root: as root, the server and its tools run as the
# `postgres` system user that the package created, and DIR belongs to it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"

set_dir() {
	DIR=${1:-${USERSYNC_POSTGRES_DIR:-$(usersync_state_dir)/postgres}}
	case $DIR in /*) ;; *) DIR="$PWD/$DIR" ;; esac
	DATA="$DIR/data"
	PIDFILE="$DIR/postgres.pid"
	PORT=${USERSYNC_POSTGRES_PORT:-15432}
}

find_bin() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x $d/initdb ]] && BIN=$d
	done
	[[ -n ${BIN:-} ]] || usersync_die "PostgreSQL is not installed: run tests/lib/deps.sh postgres"
}

# as_owner CMD...: run CMD as the user that owns the cluster.
as_owner() {
	if ((EUID == 0)); then
		setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
	else
		"$@"
	fi
}

running() { pid_alive "$PIDFILE" "$DATA"; }

ready() { as_owner "$BIN/pg_isready" -q -h "$DIR" -p "$(cat "$DIR/port")"; }

create() {
	usersync_log "creating a PostgreSQL cluster in $DIR"
	mkdir -p "$DIR"
	chmod 700 "$DIR"
	umask 077
	head -c 18 /dev/urandom | base64 | tr -d '+/=' >"$DIR/usersync.pw"
	head -c 18 /dev/urandom | base64 | tr -d '+/=' >"$DIR/superuser.pw"
	((EUID == 0)) && chown -R postgres:postgres "$DIR"
	as_owner "$BIN/initdb" -D "$DATA" -U postgres --pwfile="$DIR/superuser.pw" \
		--auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
		>"$DIR/initdb.log" 2>&1 || {
		cat "$DIR/initdb.log" >&2
		usersync_die "initdb failed"
	}
}

start() {
	rm -f "$DATA/postmaster.pid"
	if [[ ! -s $DIR/tls/server.crt ]]; then
		usersync_make_tls "$DIR/ca.crt" "$DIR/tls" postgres
		((EUID == 0)) && chown -R postgres:postgres "$DIR/tls"
	fi
	printf '%s\n' "$PORT" >"$DIR/port"
	((EUID == 0)) && chown postgres:postgres "$DIR/port"
	# No fsync: the data is disposable and the tests write a lot.
	as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 start -o \
		"-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c ssl=on -c ssl_cert_file=$DIR/tls/server.crt -c ssl_key_file=$DIR/tls/server.key" \
		>/dev/null || {
		tail -n 20 "$DIR/postgres.log" >&2
		usersync_die "PostgreSQL did not start (port $PORT in use?)"
	}
	head -n 1 "$DATA/postmaster.pid" >"$PIDFILE"
	wait_for 30 ready || usersync_die "PostgreSQL is not accepting connections"
}

init_database() {
	[[ -e $DIR/initialised ]] && return 0
	local pw
	pw=$(<"$DIR/usersync.pw")
	as_owner "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<SQL
CREATE ROLE usersync LOGIN CREATEDB PASSWORD '$pw';
CREATE DATABASE usersync OWNER usersync;
SQL
	touch "$DIR/initialised"
}

cmd_up() {
	find_bin
	if running; then
		usersync_log "PostgreSQL already running (pid $(<"$PIDFILE"), port $(<"$DIR/port"))"
		return 0
	fi
	[[ -s $DATA/PG_VERSION ]] || create
	start
	init_database
	usersync_log "PostgreSQL up on 127.0.0.1:$PORT (pid $(<"$PIDFILE"))"
}

cmd_down() {
	local pid
	if running; then
		pid=$(<"$PIDFILE")
		# SIGINT: fast shutdown (ends open sessions; SIGTERM would wait for them).
		kill -INT "$pid" 2>/dev/null || true
		wait_for 30 _usersync_gone "$pid" || {
			usersync_log "postgres $pid still running, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		}
	fi
	rm -f "$PIDFILE"
}

cmd_env() {
	running || usersync_die "PostgreSQL is not running: tests/postgres.sh up"
	printf 'export USERSYNC_POSTGRES_DSN=%q\n' \
		"postgres://usersync:$(<"$DIR/usersync.pw")@127.0.0.1:$(<"$DIR/port")/usersync"
	printf 'export USERSYNC_POSTGRES_TEST_CA=%q\n' "$DIR/ca.crt"
}

cmd=${1:-}
shift || true
case $cmd in
up) set_dir "${1:-}" && cmd_up ;;
down) set_dir "${1:-}" && cmd_down ;;
status) set_dir "${1:-}" && running ;;
env) set_dir "${1:-}" && cmd_env ;;
psql)
	set_dir ""
	find_bin
	running || usersync_die "PostgreSQL is not running: tests/postgres.sh up"
	as_owner "$BIN/psql" -h "$DIR" -p "$(<"$DIR/port")" -U postgres -d usersync "$@"
	;;
destroy)
	set_dir "${1:-}"
	cmd_down
	rm -rf "$DIR"
	;;
*)
	sed -n '2,10p' "$0" >&2
	exit 2
	;;
esac
