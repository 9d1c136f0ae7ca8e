# shellcheck shell=bash
# Small helpers shared by the test-service scripts (cluster.sh, and the
# slapd/samba/postgres scripts). Source it; it defines functions only.

# Where built artefacts are cached, outside the checkout.
usersync_cache_dir() {
	printf '%s\n' "${USERSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usersync}"
}

# usersync_scim_venv: the virtual environment that holds the SCIM server of the
# tests (tests/lib/deps.sh scim makes it), keyed by its pinned requirements and
# the Python that runs it, so a new pin or a new Python makes a new one.
usersync_scim_venv() {
	local lib key
	lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	key=$({
		(cd "$lib" && usersync_hash scim-requirements.txt)
		python3 -c 'import sys; print(sys.version)' 2>/dev/null || true
	} | sha256sum | cut -c1-16)
	printf '%s\n' "$(usersync_cache_dir)/scim-venv/$key"
}

# Where running test services keep their state (data, logs, pid files).
usersync_state_dir() {
	printf '%s\n' "${USERSYNC_STATE:-/tmp/usersync-dev}"
}

# Messages go to stderr so that stdout stays clean for `eval "$(...)"`.
usersync_log() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
}

usersync_die() {
	usersync_log "error: $*"
	exit 1
}

# usersync_hash FILE... -> first 16 hex digits of a sha256 over the files'
# names and contents, in the order given (sort the list for a stable key).
usersync_hash() {
	local f
	for f in "$@"; do
		printf '%s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"
	done | sha256sum | cut -c1-16
}

# usersync_go_key MODULE RECIPE -> the cache key of what is built from the Go
# module in directory MODULE: a hash of its go.mod, go.sum and .go files and of
# RECIPE (bumped when a build recipe changes in a way the sources don't show).
usersync_go_key() {
	local module=$1 recipe=$2 files
	mapfile -t files < <(cd "$module" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort)
	(cd "$module" && usersync_hash "${files[@]}") | sed "s/\$/ recipe $recipe/" | sha256sum | cut -c1-16
}

# usersync_go_env: the environment of every Go build of the tests, for this
# shell (call it in a subshell). The installed toolchain only; modules exactly
# as go.mod and go.sum pin them, fetched through the user's GOPROXY into the
# one shared module cache (GOMODCACHE, by default ~/go/pkg/mod); static binaries.
usersync_go_env() {
	command -v go >/dev/null ||
		usersync_die "Go is not installed (need Go >= $(sed -n 's/^go //p' go.mod)): it is required to build the test tools"
	export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly" CGO_ENABLED=0
}

# usersync_cached_build DIR BUILD [ARG...]: fill the cache entry DIR by running
# BUILD [ARG...] TMP, TMP being a temporary directory beside DIR, and renaming TMP
# into place, so that an interrupted or failed build never leaves a half-filled
# entry. A build that got there first wins; its result is as good as ours. BUILD
# runs where `set -e` has no effect: it must return non-zero itself on failure.
usersync_cached_build() {
	local dir=$1 tmp
	shift
	mkdir -p "$(dirname "$dir")"
	tmp=$(mktemp -d "$dir.tmp.XXXXXX")
	# shellcheck disable=SC2064 # expand $tmp now: it is local
	trap "rm -rf '$tmp'" EXIT
	if ! "$@" "$tmp"; then
		rm -rf "$tmp"
		trap - EXIT
		usersync_die "the build into $dir failed"
	fi
	if ! mv -T "$tmp" "$dir" 2>/dev/null; then
		[[ -d $dir ]] || usersync_die "could not move the build into $dir"
	fi
	rm -rf "$tmp"
	trap - EXIT
}

# wait_for SECONDS CMD [ARG...]: run CMD every half second until it succeeds;
# return 1 if it has not succeeded within SECONDS. CMD runs in this shell,
# so a check function may call usersync_die to give up early.
wait_for() {
	local timeout=$1
	shift
	local deadline=$((SECONDS + timeout))
	until "$@"; do
		if ((SECONDS >= deadline)); then
			return 1
		fi
		sleep 0.5
	done
}

# pid_alive PIDFILE [PATTERN]: true if PIDFILE names a running process (and,
# given PATTERN, its command line contains PATTERN, so that a recycled PID
# is not mistaken for our service).
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

# stop_pid PIDFILE [PATTERN] [SECONDS]: SIGTERM the process named in PIDFILE,
# wait up to SECONDS (default 30) for it to exit, then SIGKILL it; remove
# PIDFILE. Does nothing (successfully) if the process is not running.
stop_pid() {
	local pidfile=$1 pattern=${2:-} timeout=${3:-30} pid
	if pid_alive "$pidfile" "$pattern"; then
		pid=$(<"$pidfile")
		kill -TERM "$pid" 2>/dev/null || true
		if ! wait_for "$timeout" _usersync_gone "$pid"; then
			usersync_log "pid $pid still running after ${timeout}s, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			wait_for 10 _usersync_gone "$pid" || usersync_die "pid $pid did not die"
		fi
	fi
	rm -f "$pidfile"
}

_usersync_gone() {
	! kill -0 "$1" 2>/dev/null
}

# usersync_make_tls CA_CRT TLS_DIR LABEL [CN [SAN]]: a private CA (certificate CA_CRT,
# key in TLS_DIR) and a server certificate it signed (TLS_DIR/server.crt and
# server.key, the key readable by its owner only), for CN (default localhost) and the
# subjectAltName SAN (default 127.0.0.1, localhost and this host's name).
usersync_make_tls() {
	local ca=$1 t=$2 label=$3 cn=${4:-localhost}
	local san=${5:-"IP:127.0.0.1,DNS:localhost,DNS:$(hostname)"}
	mkdir -p "$t"
	(
		umask 077
		openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -sha256 \
			-keyout "$t/ca.key" -out "$ca" -subj "/O=usersync tests/CN=usersync test CA ($label)" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
		openssl req -new -newkey rsa:2048 -nodes -sha256 \
			-keyout "$t/server.key" -out "$t/server.csr" -subj "/O=usersync tests/CN=$cn" 2>/dev/null
		printf '%s\n' \
			"basicConstraints=critical,CA:FALSE" \
			"keyUsage=critical,digitalSignature,keyEncipherment" \
			"extendedKeyUsage=serverAuth" \
			"subjectAltName=$san" \
			"authorityKeyIdentifier=keyid" \
			"subjectKeyIdentifier=hash" >"$t/server.ext"
		openssl x509 -req -in "$t/server.csr" -CA "$ca" -CAkey "$t/ca.key" \
			-CAserial "$t/ca.srl" -CAcreateserial -days 3650 -sha256 -extfile "$t/server.ext" -out "$t/server.crt" 2>/dev/null
	)
	chmod 644 "$ca" "$t/server.crt"
}
