# What the benchmark scripts share: logging, stopping only what they started (by
# PID), the release binary they measure, and the servers in $STATE. Sourced after
# tests/lib/common.sh, with $repo, $STATE and $CLUSTER_DIR set.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# Each script's servers live in its own $STATE: a server it never started there is
# not running, and its `down` does nothing.
servers_down() {
	bash "$repo/tests/slapd.sh" down >/dev/null 2>&1 || true
	bash "$repo/tests/postgres.sh" down >/dev/null 2>&1 || true
	bash "$repo/tests/scim.sh" down >/dev/null 2>&1 || true
	bash "$repo/tests/cluster.sh" down "$CLUSTER_DIR" >/dev/null 2>&1 || true
}

stop_process() { # PID [SECONDS]
	local pid=$1 timeout=${2:-60}
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	wait_for "$timeout" _usersync_gone "$pid" || {
		log "pid $pid still running after ${timeout}s, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	}
	wait "$pid" 2>/dev/null || true
}

build() {
	log "building usersync (release)"
	cargo build --release --bin usersync >&2
	# A stable copy: colleagues may rebuild target/ while the benchmark runs.
	install -m 755 "$repo/target/release/usersync" "$STATE/usersync"
	BIN=$STATE/usersync
}

start_cluster() {
	bash "$repo/tests/cluster.sh" down "$CLUSTER_DIR" >/dev/null 2>&1 || true
	rm -rf "$CLUSTER_DIR"
	log "starting a fresh control plane in $CLUSTER_DIR"
	eval "$(bash "$repo/tests/cluster.sh" up "$CLUSTER_DIR")"
	export KUBECONFIG PATH
}

# Seed OpenLDAP with N users (tests/slapd.sh seed) and start it; its env is
# exported, and SEED_S holds the seconds it took.
start_slapd() { # N
	local t0=$SECONDS
	log "seeding $1 users with slapadd"
	bash "$repo/tests/slapd.sh" seed "$1" >/dev/null
	bash "$repo/tests/slapd.sh" up >/dev/null
	eval "$(bash "$repo/tests/slapd.sh" env)"
	[[ $USERSYNC_SLAPD_URL == "ldap://127.0.0.1:$USERSYNC_SLAPD_PORT" ]] ||
		die "slapd answers on $USERSYNC_SLAPD_URL, not port $USERSYNC_SLAPD_PORT (another instance in $STATE/slapd?)"
	SEED_S=$((SECONDS - t0))
	log "directory ready in ${SEED_S}s on $USERSYNC_SLAPD_URL"
}

# The CRDs, namespace $NS, and the bind Secret bench-ldap-bind of the seeded slapd
# (or of the directory whose password file BIND_PASSWORD_FILE names).
install_base() {
	kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
	kubectl wait --for=condition=Established --timeout=60s crd -l app.kubernetes.io/part-of=usersync >/dev/null
	kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	kubectl -n "$NS" create secret generic bench-ldap-bind \
		--from-file=password="${BIND_PASSWORD_FILE:-$USERSYNC_SLAPD_BIND_PASSWORD_FILE}" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	# Connectors use only Secrets marked as credentials.
	kubectl -n "$NS" label secret bench-ldap-bind usersync.dev/credential=true --overwrite >/dev/null
}
