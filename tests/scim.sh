#!/usr/bin/env bash
# A private SCIM 2.0 server (scim2-server from PyPI) for the provisioning tests.
#
#   tests/scim.sh up [DIR]        start it; reuse a running one
#   tests/scim.sh down [DIR]      stop it (its users are kept in memory only: they go)
#   tests/scim.sh status [DIR]    exit 0 when running
#   tests/scim.sh env [DIR]       print `export USERSYNC_SCIM_*=...` (eval it)
#
# DIR defaults to $USERSYNC_SCIM_DIR, else "$(usersync_state_dir)/scim"
# ($USERSYNC_STATE or /tmp/usersync-dev). It listens on 127.0.0.1 only, port
# $USERSYNC_SCIM_PORT (18080). The server is installed by `tests/lib/deps.sh scim`.
#
# The server keeps its resources in memory and serves tenants made on first use,
# each with users of its own: http://127.0.0.1:PORT/<tenant>/v2 (/Users,
# /ServiceProviderConfig, /ResourceTypes, /Schemas). `env` prints the URL of the
# tenant `usersync` as USERSYNC_SCIM_URL and the server's root as
# USERSYNC_SCIM_ROOT, so that a test can take a tenant of its own. Every request
# needs `Authorization: Bearer <token>`; the token is generated at the first `up`
# and kept in DIR/token (mode 600, no newline), named by USERSYNC_SCIM_TOKEN_FILE.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"

# The tenant whose URL `env` prints.
TENANT=usersync

set_dir() {
	DIR=${1:-${USERSYNC_SCIM_DIR:-$(usersync_state_dir)/scim}}
	case $DIR in /*) ;; *) DIR="$PWD/$DIR" ;; esac
	PIDFILE="$DIR/scim.pid"
	VENV=$(usersync_scim_venv)
}

port() {
	if [[ -s $DIR/port ]] && running; then
		PORT=$(<"$DIR/port")
	else
		PORT=${USERSYNC_SCIM_PORT:-18080}
	fi
	ROOT="http://127.0.0.1:$PORT"
}

running() { pid_alive "$PIDFILE" scim_server.py; }

port_free() {
	! ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

# The server answers an authenticated request for its configuration.
answers() {
	if ! kill -0 "$(<"$PIDFILE")" 2>/dev/null; then
		usersync_die "scim2-server exited during start-up; see $DIR/scim.log: $(tail -n 5 "$DIR/scim.log")"
	fi
	curl -fsS -o /dev/null --max-time 2 -H @"$DIR/auth-header" \
		"$ROOT/$TENANT/v2/ServiceProviderConfig" 2>/dev/null
}

cmd_up() {
	[[ -x $VENV/bin/scim2-server && -e $VENV/.complete ]] ||
		usersync_die "scim2-server is not installed: run tests/lib/deps.sh scim"
	port
	if running; then
		return 0
	fi
	port_free "$PORT" || usersync_die "port $PORT is in use (set USERSYNC_SCIM_PORT)"
	mkdir -p "$DIR"
	chmod 700 "$DIR"
	if [[ ! -s $DIR/token ]]; then
		(
			umask 077
			openssl rand -hex 24 | tr -d '\n' >"$DIR/token"
		)
	fi
	(
		umask 077
		printf 'Authorization: Bearer %s\n' "$(<"$DIR/token")" >"$DIR/auth-header"
	)
	printf '%s\n' "$PORT" >"$DIR/port"
	rm -f "$PIDFILE"
	# The token goes in by its file: on the command line `ps` would show it.
	setsid "$VENV/bin/python3" "$here/lib/scim_server.py" "$DIR/token" \
		--hostname 127.0.0.1 --port "$PORT" --dynamic-tenants \
		</dev/null >>"$DIR/scim.log" 2>&1 &
	echo $! >"$PIDFILE"
	wait_for 30 answers || usersync_die "scim2-server did not answer within 30s; see $DIR/scim.log"
	usersync_log "scim2-server up (pid $(<"$PIDFILE")) on $ROOT"
}

cmd_down() {
	if running; then
		stop_pid "$PIDFILE" scim_server.py 30
		usersync_log "scim2-server stopped"
	else
		rm -f "$PIDFILE"
	fi
}

cmd_env() {
	running || usersync_die "scim2-server is not running: tests/scim.sh up"
	port
	cat <<EOF
export USERSYNC_SCIM_URL=$ROOT/$TENANT/v2
export USERSYNC_SCIM_ROOT=$ROOT
export USERSYNC_SCIM_TOKEN_FILE=$DIR/token
EOF
}

cmd=${1:-}
shift || true
case $cmd in
up) set_dir "${1:-}" && cmd_up ;;
down) set_dir "${1:-}" && cmd_down ;;
status) set_dir "${1:-}" && running ;;
env) set_dir "${1:-}" && cmd_env ;;
*)
	sed -n '2,19p' "$0" >&2
	exit 2
	;;
esac
