#!/usr/bin/env bash
# usersync benchmark: import, no-change resync and a 1 % change at directory sizes
# of 10k and 100k users (run on demand; not part of CI). See bench/README.md.
#
#   bash bench/run.sh [N ...]    benchmark each size N (default: 10000 100000)
#   bash bench/run.sh down       stop the benchmark's servers (when kept with KEEP=1)
#
# For each N: a fresh control plane (tests/cluster.sh) and an OpenLDAP directory
# seeded with N staff users by slapadd (tests/slapd.sh), the CRDs, a policy (24h
# interval, maxPreservePercent 100), a connector (OpenLDAP, ldap:// with allowPlaintextBind, pageSize 1000,
# timeout 120s) and ONE mapping over ou=Staff. Then:
#   1. the read target, apart from any run: READ_SAMPLES full reads by `usersync
#      plan` (the runner's own read and plan, nothing applied; the registry is still
#      empty) interleaved with `ldapsearch -E pr=1000/noprompt` dumps of the same
#      base, filter and attributes with the same service account, and the search for
#      disabled accounts that the operator also runs;
#   2. the release `usersync run` as a process with JSON logs, and its runs: the
#      first (scheduled) import; a no-change resync (`usersync sync`) and a resync
#      after 1 % of the users changed their displayName (ldapmodify), with
#      incremental reads if the build has them, then again with full reads (the
#      no-change one FULL_RESYNCS times).
# For each run: its wall time, the time before its read (mostly the registry
# snapshot), its read next to the ldapsearch dumps, the time after (plan and
# writes), API writes (the operator's count and the apiserver's request metrics),
# and the operator's RSS before it and its peak during it (VmHWM, reset before each
# run). At the end: the operator's overall peak RSS, `usersync plan`'s peak (read +
# plan without writes), the control plane's peak RSS and etcd's size. A table
# compares them with the targets (it reports, it does not fail): read <= 1.5x
# ldapsearch, zero writes on a no-change resync, peak RSS <= 200 MB at 100k users.
# Everything goes to $USERSYNC_BENCH_STATE/report.md, with the raw figures in
# results.tsv, operator logs and 10 s memory/progress samples beside it.
#
# Everything lives apart from dev and test instances: state in
# $USERSYNC_BENCH_STATE (default /tmp/usersync-bench), slapd on 127.0.0.1:33389
# (LDAPS 33636; USERSYNC_BENCH_LDAP_PORT / USERSYNC_BENCH_LDAPS_PORT), namespace
# usersync-bench. Knobs:
#   USERSYNC_BENCH_FIRST_RUN_LIMIT  seconds to wait for the first import (default
#                                   1500); past it the run is abandoned and its write
#                                   rate reported instead. 0 waits for ever.
#   USERSYNC_BENCH_KEEP=1           leave the servers running at the end.
#   USERSYNC_BENCH_LDAPSEARCH_REPS  ldapsearch dumps per measurement (median; default 3).
#   USERSYNC_BENCH_MODES            read modes of the resync and 1 % runs, in order
#                                   (default "incremental full"): with a build that
#                                   has incremental reads (SyncPolicy
#                                   spec.incremental), both pairs of runs are measured,
#                                   the policy switched between them; without, only full.
#   USERSYNC_BENCH_FULL_RESYNCS     no-change resyncs with full reads (default 3): the
#                                   read-time comparison uses their median.
#   USERSYNC_BENCH_READ_SAMPLES     interleaved `usersync plan` / ldapsearch pairs
#                                   before the import (default 5): the read target.
#   USERSYNC_BENCH_READ_ONLY=1      stop each size after the read comparison (no
#                                   operator, no import): the read target in a minute.
#   USERSYNC_BENCH_SAMPLE_S         seconds between memory samples (default 10).
#   USERSYNC_BENCH_STORE            kubernetes (default): DirectoryUser objects; or
#                                   postgres: a PostgreSQL server of the bench's own
#                                   (tests/postgres.sh, port USERSYNC_BENCH_POSTGRES_PORT,
#                                   default 33432) and a fresh database per size; each
#                                   run also reports the WAL it wrote, and each size
#                                   the tables' rows and bytes. Targets: 1M import
#                                   <= 60 s, no-change resync <= 5 s, peak RSS <= 600 MB.
#                                   The server runs with fsync, full_page_writes and
#                                   synchronous_commit on, as in production (the tests'
#                                   instances have them off); USERSYNC_BENCH_PG_DURABLE=0
#                                   turns them off.
#   USERSYNC_BENCH_RAW              1 (default, Kubernetes store): right after the
#                                   import, bench/rawwrite writes the objects it wrote
#                                   into another namespace (the same create and status
#                                   apply, 16 in flight): the API server's own write
#                                   ceiling; the import is reported as a ratio to it
#                                   (target >= 0.9x). 0 skips it.
#   USERSYNC_BENCH_DELIVERY=1       after the runs, deliver the registry to a
#                                   ProvisioningTarget on tests/scim.sh's scim2-server
#                                   (port USERSYNC_BENCH_SCIM_PORT, default 33900): the
#                                   first delivery, a no-change cycle, a no-change full
#                                   reconcile and a cycle after a 1 % change, each with
#                                   its wall time and requests (the cycle's count and
#                                   usersync_target_requests_total from the operator's
#                                   metrics on 127.0.0.1:USERSYNC_BENCH_METRICS_PORT,
#                                   default 33090).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../tests/lib/common.sh
source "$repo/tests/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

export USERSYNC_STATE=${USERSYNC_BENCH_STATE:-/tmp/usersync-bench}
export USERSYNC_SLAPD_PORT=${USERSYNC_BENCH_LDAP_PORT:-33389}
export USERSYNC_SLAPD_LDAPS_PORT=${USERSYNC_BENCH_LDAPS_PORT:-33636}
# slapd's state must follow USERSYNC_STATE, not a dev/test override.
unset USERSYNC_SLAPD_DIR
FIRST_RUN_LIMIT=${USERSYNC_BENCH_FIRST_RUN_LIMIT:-1500}
KEEP=${USERSYNC_BENCH_KEEP:-0}
REPS=${USERSYNC_BENCH_LDAPSEARCH_REPS:-3}
MODES=${USERSYNC_BENCH_MODES:-incremental full}
FULL_RESYNCS=${USERSYNC_BENCH_FULL_RESYNCS:-3}
READ_SAMPLES=${USERSYNC_BENCH_READ_SAMPLES:-5}
READ_ONLY=${USERSYNC_BENCH_READ_ONLY:-0}
STORE=${USERSYNC_BENCH_STORE:-kubernetes}
RAW=${USERSYNC_BENCH_RAW:-1}
SAMPLE_S=${USERSYNC_BENCH_SAMPLE_S:-10}
PG_DURABLE=${USERSYNC_BENCH_PG_DURABLE:-1}
DELIVERY=${USERSYNC_BENCH_DELIVERY:-0}
METRICS_ADDR=127.0.0.1:${USERSYNC_BENCH_METRICS_PORT:-33090}
export USERSYNC_POSTGRES_PORT=${USERSYNC_BENCH_POSTGRES_PORT:-33432}
export USERSYNC_SCIM_PORT=${USERSYNC_BENCH_SCIM_PORT:-33900}
# Their state must follow USERSYNC_STATE too.
unset USERSYNC_POSTGRES_DIR USERSYNC_SCIM_DIR
case $STORE in
kubernetes | postgres) ;;
*)
	printf 'USERSYNC_BENCH_STORE must be kubernetes or postgres, got %q\n' "$STORE" >&2
	exit 2
	;;
esac
[[ $STORE == kubernetes ]] || RAW=0

NS=usersync-bench
MAPPING=staff
PAGE=1000
SUFFIX=dc=example,dc=org
STAFF_BASE=ou=Staff,$SUFFIX
# What the operator searches for this mapping (OpenLDAP flavor, no admin filter):
# the scope filter and the projected attributes, among them the ppolicy lock whose
# presence is the disabled signal. DISABLED_FILTER is the separate search for locked
# accounts that builds before the lock was read with each entry ran; it is still
# timed, so that figures stay comparable with theirs.
FILTER='(objectClass=inetOrgPerson)'
ATTRS=(entryUUID uid mail displayName departmentNumber pwdAccountLockedTime)
DISABLED_FILTER='(&(objectClass=inetOrgPerson)(pwdAccountLockedTime=*))'
RATIO_TARGET=1.5
# The peak RSS target and the size it is for: 200 MB at 100k users for the
# Kubernetes store, 600 MB at 1M users for PostgreSQL.
if [[ $STORE == postgres ]]; then
	RSS_TARGET_MB=600 RSS_TARGET_USERS=1000000
else
	RSS_TARGET_MB=200 RSS_TARGET_USERS=100000
fi
RAW_TARGET=0.9

STATE=$USERSYNC_STATE
CLUSTER_DIR=$STATE/cluster
RESULTS=$STATE/results.tsv
OP_PID=
SAMPLER_PID=
OP_PEAK_KB=0

if [[ ${1:-} == down ]]; then
	servers_down
	exit 0
fi

sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(10000 100000)
for n in "${sizes[@]}"; do
	if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 100)); then
		die "a size is a number of users >= 100, got '$n'"
	fi
done

mkdir -p "$STATE"
cd "$repo"

# --- process bookkeeping: only what this script started, by PID -------------------

cleanup() {
	stop_process "$SAMPLER_PID" 5
	stop_process "$OP_PID" 60
	if [[ $KEEP != 1 ]]; then
		servers_down
	else
		log "servers kept running (state in $STATE); 'bash bench/run.sh down' stops them"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- small helpers -----------------------------------------------------------------

now_ns() { date +%s%N; }

vm_kb() { # PID FIELD -> kB (VmHWM, VmRSS), empty if gone
	awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || true
}

# CPU seconds (user + system) a process has used so far; 0 if gone.
cpu_s() { # PID
	awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# CPU seconds PostgreSQL has used so far: the postmaster, its live children (the
# backends) and the children it has reaped (backends of closed connections).
pg_cpu_s() {
	[[ $STORE == postgres ]] || return 0
	local pm child
	pm=$(<"$STATE/postgres/postgres.pid")
	{
		awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat"
		for child in $(pgrep -P "$pm"); do
			awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null || true
		done
	} | awk -v hz="$(getconf CLK_TCK)" '{s += $1} END {printf "%.1f", s / hz}'
}

# CPU seconds since a mark: cpu_since NOW MARK
cpu_since() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN {printf "%.1f", a - b}'; }

mb() { awk -v kb="${1:-0}" 'BEGIN {printf "%.0f", kb / 1024}'; }

cluster_pid() { cat "$CLUSTER_DIR/pid" 2>/dev/null || true; }

# Successful DirectoryUser writes the apiserver has served (server-side apply is
# counted as verb APPLY; spec and status subresource together).
apiserver_user_writes() {
	kubectl get --raw /metrics 2>/dev/null | awk '
		/^apiserver_request_total\{/ && /resource="directoryusers"/ &&
		/verb="(APPLY|PATCH|POST|PUT|DELETE)"/ && /code="2/ {s += $NF}
		END {printf "%d\n", s}'
}

svc_ldapsearch() {
	ldapsearch -x -H "$USERSYNC_SLAPD_URL" -D "$USERSYNC_SLAPD_BIND_DN" \
		-y "$USERSYNC_SLAPD_BIND_PASSWORD_FILE" "$@"
}

# Median wall time (ms) of REPS paged dumps: ldapsearch_ms FILTER ATTR...
ldapsearch_ms() {
	local filter=$1 i t0 t1
	shift
	local times=()
	for ((i = 0; i < REPS; i++)); do
		t0=$(now_ns)
		svc_ldapsearch -LLL -E "pr=$PAGE/noprompt" -b "$STAFF_BASE" -s sub "$filter" "$@" >/dev/null
		t1=$(now_ns)
		times+=($(((t1 - t0) / 1000000)))
	done
	printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

# The last run's "run finished" line and the read line before it ("directory read",
# or "incremental directory read"), as shell assignments: result, duration (s),
# writes, imported, updated, mode (full/incremental), entries, read_ms, pre_read
# (s before the read started: mostly the registry snapshot) and post_read (s after
# it ended: plan, writes, status).
run_figures() {
	python3 - "$1" <<'PY'
import json, sys
from datetime import datetime
read = done = pending = None
for line in open(sys.argv[1], errors="replace"):
    try:
        obj = json.loads(line)
    except ValueError:
        continue
    msg = obj.get("message") or obj.get("fields", {}).get("message")
    if msg in ("directory read", "incremental directory read"):
        pending = obj
    elif msg == "run finished":
        done, read, pending = obj, pending, None
if done is None:
    sys.exit("no 'run finished' line in the operator log")
def ts(o):
    return datetime.fromisoformat(o["timestamp"].replace("Z", "+00:00")).timestamp()
duration = float(str(done.get("duration", "0")).rstrip("s") or 0)
out = {
    "result": done.get("result", "?"),
    "duration": duration,
    "writes": done.get("writes", 0),
    "imported": done.get("imported", 0),
    "updated": done.get("updated", 0),
    "mode": "", "entries": "", "read_ms": "", "pre_read": "", "post_read": "",
}
if read is not None:
    end, read_end = ts(done), ts(read)
    start = end - duration
    read_ms = int(read["read_ms"])
    out["mode"] = "incremental" if "incremental" in (read.get("message") or "") else "full"
    out["entries"] = read["entries"]
    out["read_ms"] = read_ms
    out["pre_read"] = "%.1f" % max(0.0, read_end - read_ms / 1000 - start)
    out["post_read"] = "%.1f" % max(0.0, end - read_end)
for k, v in out.items():
    print(f"{k}={v}")
PY
}

count_runs() { grep -c '"message":"run finished"' "$1" 2>/dev/null || true; }

# --- the steps ---------------------------------------------------------------------

# --- PostgreSQL (USERSYNC_BENCH_STORE=postgres) ---------------------------------------

# psql as the superuser, unaligned and quiet, stopping at the first error.
pg_sql() { bash "$repo/tests/postgres.sh" psql -XAtq -v ON_ERROR_STOP=1 "$@"; }

# The bench's server, and a fresh database `bench` for this size; the operator and
# `usersync plan` keep their users in it.
start_postgres() {
	[[ -n $(compgen -G '/usr/lib/postgresql/*/bin/initdb') ]] || bash "$repo/tests/lib/deps.sh" postgres >&2
	bash "$repo/tests/postgres.sh" up >/dev/null
	eval "$(bash "$repo/tests/postgres.sh" env)"
	# The tests' server trades durability for speed; the bench measures what a
	# production server does (this server's own configuration; reloaded, no restart).
	local durable=on
	[[ $PG_DURABLE == 1 ]] || durable=off
	pg_sql -c "ALTER SYSTEM SET fsync = $durable" -c "ALTER SYSTEM SET full_page_writes = $durable" \
		-c "ALTER SYSTEM SET synchronous_commit = $durable" -c 'SELECT pg_reload_conf()' >/dev/null
	pg_sql -c 'DROP DATABASE IF EXISTS bench WITH (FORCE)' -c 'CREATE DATABASE bench OWNER usersync'
	export USERSYNC_POSTGRES_DSN=${USERSYNC_POSTGRES_DSN%/*}/bench
	log "PostgreSQL ready on 127.0.0.1:$USERSYNC_POSTGRES_PORT (database bench)"
}

# The server's WAL position now, and the bytes of WAL written since one.
wal_lsn() { [[ $STORE == postgres ]] && pg_sql -c 'SELECT pg_current_wal_lsn()' || true; }
wal_since() { # LSN
	[[ $STORE == postgres && -n $1 ]] || return 0
	pg_sql -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$1')::bigint"
}

# Rows and bytes of each table of the store, as key=value fields:
# TABLE_rows, TABLE_heap (the table with its TOAST), TABLE_indexes, TABLE_total.
pg_sizes() {
	pg_sql -d bench -F '	' -c "
		SELECT t || '_rows=' || (xpath('/row/c/text()',
		           query_to_xml(format('SELECT count(*) AS c FROM %I', t), false, true, '')))[1]::text,
		       t || '_heap=' || pg_table_size(t::regclass),
		       t || '_indexes=' || pg_indexes_size(t::regclass),
		       t || '_total=' || pg_total_relation_size(t::regclass)
		FROM unnest(ARRAY['users', 'transitions', 'runs', 'deliveries']) AS t"
}

install_objects() {
	install_base
	kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: usersync.dev/v1alpha1
kind: SyncPolicy
metadata:
  name: bench
spec:
  interval: 24h
  autoImport: true
  autoPreserveUnmapped: true
  preservation:
    autoDelete: true
    deleteAfter: 45d
  safety:
    maxPreservePercent: 100
    maxDeletesPerRun: 500
  dryRun: false
---
apiVersion: usersync.dev/v1alpha1
kind: ConnectorHealth
metadata:
  name: bench-ldap
spec:
  ldap:
    url: $USERSYNC_SLAPD_URL
    startTLS: false
    # slapd listens on 127.0.0.1 only; TLS would add its cost to every read measured.
    allowPlaintextBind: true
    bindDN: $USERSYNC_SLAPD_BIND_DN
    bindPasswordSecretRef: {name: bench-ldap-bind, key: password}
    flavor: OpenLDAP
    pageSize: $PAGE
    timeout: 120s
  probeInterval: 1m
  staleAfter: 5m
  deletionsAllowed: true
---
apiVersion: usersync.dev/v1alpha1
kind: DirectoryMapping
metadata:
  name: $MAPPING
spec:
  connectorRef: bench-ldap
  policyRef: bench
  priority: 100
  profile: staff
  ldap:
    baseDN: $STAFF_BASE
    scope: Subtree
  attributes:
    username: uid
    email: mail
    displayName: displayName
    extra:
      department: departmentNumber
EOF
}

start_operator() { # LOGFILE
	log "starting the operator (logs: $1)"
	"$BIN" run --namespace "$NS" --store "$STORE" --metrics-addr "$METRICS_ADDR" --log-format json >"$1" 2>&1 </dev/null &
	OP_PID=$!
	echo "$OP_PID" >"$STATE/operator.pid"
	log "operator pid $OP_PID"
}

# Memory and progress every SAMPLE_S seconds while a size is measured: elapsed s
# (and the wall clock, to set beside the operator's log), operator RSS kB,
# control-plane RSS kB, DirectoryUser writes served by the apiserver.
start_sampler() { # FILE
	local file=$1 t0=$SECONDS cp
	cp=$(cluster_pid)
	printf 'elapsed_s\toperator_rss_kb\tcontrolplane_rss_kb\tapiserver_user_writes\ttime\n' >"$file"
	(
		while kill -0 "$OP_PID" 2>/dev/null; do
			printf '%s\t%s\t%s\t%s\t%(%T)T\n' "$((SECONDS - t0))" "$(vm_kb "$OP_PID" VmRSS)" \
				"$(vm_kb "$cp" VmRSS)" "$([[ $STORE == postgres ]] || apiserver_user_writes)" -1 >>"$file"
			sleep "$SAMPLE_S"
		done
	) &
	SAMPLER_PID=$!
}

# Wait for the first (scheduled) run by polling the mapping's status, as an admin
# would. Returns 1 when FIRST_RUN_LIMIT passes first.
wait_first_run() { # LOGFILE SAMPLES EXPECTED_WRITES
	local oplog=$1 samples=$2 expected=$3 t0=$SECONDS last=-60 id busy
	while :; do
		id=$(kubectl -n "$NS" get dmap "$MAPPING" -o jsonpath='{.status.lastRun.id}' 2>/dev/null || true)
		busy=$(kubectl -n "$NS" get dmap "$MAPPING" -o jsonpath='{.status.syncInProgress}' 2>/dev/null || true)
		[[ -n $id && $busy != true && $(count_runs "$oplog") -ge 1 ]] && return 0
		kill -0 "$OP_PID" 2>/dev/null || die "the operator exited; see $oplog"
		if ((SECONDS - last >= 60)); then
			last=$SECONDS
			log "  first run: $((SECONDS - t0))s, $(awk -F'\t' 'NR > 1 {w = $4} END {print w + 0}' "$samples") of ~$expected user writes served, operator RSS $(mb "$(vm_kb "$OP_PID" VmRSS)") MB, control plane RSS $(mb "$(vm_kb "$(cluster_pid)" VmRSS)") MB"
		fi
		if ((FIRST_RUN_LIMIT > 0 && SECONDS - t0 >= FIRST_RUN_LIMIT)); then
			return 1
		fi
		sleep 2
	done
}

# Print and record one run: record SIZE PHASE LOGFILE WRITES_BEFORE [NOTE]
record() {
	local n=$1 phase=$2 oplog=$3 before=$4 note=${5:-} ls_main ls_dis after peak load
	local result duration writes imported updated mode entries read_ms pre_read post_read wal cpu
	eval "$(run_figures "$oplog")"
	wal=$(wal_since "${WAL_BEFORE:-}")
	cpu="$(cpu_since "$(cpu_s "$OP_PID")" "${RUN_CPU0:-0}")"
	[[ $STORE != postgres ]] || cpu="$cpu / $(cpu_since "$(pg_cpu_s)" "${PG_CPU0:-0}")"
	rss_peak
	peak=$RSS_PEAK_KB
	load=$(cut -d' ' -f1 /proc/loadavg)
	after=$(apiserver_user_writes)
	ls_main=$(ldapsearch_ms "$FILTER" "${ATTRS[@]}")
	ls_dis=$(ldapsearch_ms "$DISABLED_FILTER" entryUUID)
	local ratio ratio_both
	ratio=$(ratio_of "$read_ms" "$ls_main")
	ratio_both=$(ratio_of "$read_ms" "$((ls_main + ls_dis))")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
		"$n" "$phase" "$mode" "$result" "$duration" "$entries" "$read_ms" "$ls_main" "$ls_dis" "$ratio" \
		"$ratio_both" "$writes" "$((after - before))" "$pre_read" "$post_read" "${RSS_BEFORE_KB:-}" "$peak" "$load" "$note" "$wal" "$cpu" >>"$RESULTS"
	log "  $phase: $result in ${duration}s (imported $imported, updated $updated); $mode read ${read_ms} ms of $entries entries vs ldapsearch ${ls_main} ms (+${ls_dis} ms disabled search): ratio $ratio ($ratio_both with both searches); writes $writes (apiserver: $((after - before))${wal:+; WAL $wal bytes}); CPU ${cpu}s; before the read ${pre_read}s, after it ${post_read}s; RSS $(mb "${RSS_BEFORE_KB:-0}") MB before, peak $(mb "$peak") MB; load $load"
	kubectl -n "$NS" get dmap "$MAPPING" -o jsonpath='{.status.lastRun}' >"$STATE/lastrun-$n-$phase.json" 2>/dev/null || true
}

# Per-run peak RSS: reset the operator's VmHWM to its current RSS before a run
# (clear_refs 5), read it after; the overall peak is the largest of them.
rss_reset() {
	WAL_BEFORE=$(wal_lsn)
	RUN_CPU0=$(cpu_s "$OP_PID")
	PG_CPU0=$(pg_cpu_s)
	RSS_BEFORE_KB=$(vm_kb "$OP_PID" VmRSS)
	echo 5 >"/proc/$OP_PID/clear_refs" 2>/dev/null || log "  (could not reset VmHWM; per-run peaks are cumulative)"
}
rss_peak() { # sets RSS_PEAK_KB and OP_PEAK_KB
	RSS_PEAK_KB=$(vm_kb "$OP_PID" VmHWM)
	RSS_PEAK_KB=${RSS_PEAK_KB:-0}
	if ((RSS_PEAK_KB > OP_PEAK_KB)); then OP_PEAK_KB=$RSS_PEAK_KB; fi
}

ratio_of() { # READ_MS LDAPSEARCH_MS
	awk -v r="$1" -v l="$2" 'BEGIN {if (l > 0 && r != "") printf "%.2f", r / l; else print "-"}'
}

# 1 % of the staff users get a new displayName; disabled users (never imported) are
# avoided so that every change is one the operator must write.
change_one_percent() { # N TAG
	local n=$1 tag=$2
	python3 - "$n" "$tag-$(date +%s)" "$STAFF_BASE" <<'PY' | bash "$repo/tests/slapd.sh" ldap ldapmodify >/dev/null
import sys
n, tag, base = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for k in range(n // 100):
    i = 100 * k + 1
    if i % 33 == 7:  # disabled in the seeded directory
        i += 1
    print(f"dn: uid=user{i:06d},{base}\nchangetype: modify\nreplace: displayName\n"
          f"displayName: Bench {tag} {i}\n")
PY
}

sync_now() { # PHASE
	local out
	if ! out=$("$BIN" sync "$MAPPING" -n "$NS" --timeout 120m 2>&1); then
		log "  usersync sync ($1) did not succeed: $out"
	fi
}

# Does the installed SyncPolicy CRD have spec.incremental (incremental reads)?
has_incremental() {
	[[ $(kubectl get crd syncpolicies.usersync.dev \
		-o jsonpath='{.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.incremental.type}' 2>/dev/null) == boolean ]]
}

# A no-change resync, then a 1 % change and a resync, with reads of MODE.
resync_and_change() { # N OPLOG MODE
	local n=$1 oplog=$2 mode=$3 before tc
	if has_incremental; then
		local want=false
		[[ $mode == incremental ]] && want=true
		kubectl -n "$NS" patch spol bench --type merge -p "{\"spec\":{\"incremental\":$want}}" >/dev/null
	elif [[ $mode == incremental ]]; then
		log "  this build has no incremental reads (SyncPolicy spec.incremental); skipping that mode"
		return 0
	fi
	local reps=1 k
	[[ $mode == full ]] && reps=$FULL_RESYNCS
	for ((k = 1; k <= reps; k++)); do
		before=$(apiserver_user_writes)
		log "  no-change resync ($mode reads)"
		rss_reset
		sync_now "resync-$mode"
		record "$n" "resync-$mode" "$oplog" "$before"
	done
	log "  changing the displayName of $((n / 100)) users"
	tc=$SECONDS
	change_one_percent "$n" "$mode"
	log "  changed in $((SECONDS - tc))s; resync ($mode reads)"
	before=$(apiserver_user_writes)
	rss_reset
	sync_now "change-$mode"
	record "$n" "change-$mode" "$oplog" "$before" "$(expected_writes "$((n / 100))")"
}

# `usersync plan` in its own process: the same snapshot, read and plan as a run,
# nothing applied. Prints "peak_kb seconds cpu_seconds read_ms".
plan_only() {
	local out errs read_ms
	out=$(mktemp)
	errs=$(mktemp)
	/usr/bin/time -f '%M %e %U %S' -o "$out" "$BIN" --log-format json plan "$MAPPING" -n "$NS" >/dev/null 2>"$errs" || true
	read_ms=$(grep 'directory read"' "$errs" | tail -n 1 | sed -n 's/.*"read_ms":\([0-9]*\).*/\1/p')
	printf '%s %s\n' "$(tail -n 1 "$out" | awk '{printf "%s %s %.2f", $1, $2, $3 + $4}')" "${read_ms:--}"
	rm -f "$out" "$errs"
}

# The read target, measured apart from any run: READ_SAMPLES times, a full read by
# `usersync plan` (the runner's own code path; the registry is still empty, so the
# rest of the plan is cheap) and the two ldapsearch dumps it corresponds to, in
# alternating order so that a change of machine load hits both alike.
read_comparison() { # N
	local n=$1 k p ls_main ls_dis ls_cpu
	for ((k = 1; k <= READ_SAMPLES; k++)); do
		if ((k % 2)); then
			p=$(plan_only)
			ls_main=$(REPS=1 ldapsearch_ms "$FILTER" "${ATTRS[@]}")
			ls_dis=$(REPS=1 ldapsearch_ms "$DISABLED_FILTER" entryUUID)
		else
			ls_main=$(REPS=1 ldapsearch_ms "$FILTER" "${ATTRS[@]}")
			ls_dis=$(REPS=1 ldapsearch_ms "$DISABLED_FILTER" entryUUID)
			p=$(plan_only)
		fi
		read -r PLAN_PEAK_KB PLAN_S PLAN_CPU PLAN_READ_MS <<<"$p"
		ls_cpu=$( (/usr/bin/time -f '%U %S' ldapsearch -x -H "$USERSYNC_SLAPD_URL" -D "$USERSYNC_SLAPD_BIND_DN" \
			-y "$USERSYNC_SLAPD_BIND_PASSWORD_FILE" -LLL -E "pr=$PAGE/noprompt" -b "$STAFF_BASE" -s sub \
			"$FILTER" "${ATTRS[@]}" >/dev/null) 2>&1 | tail -n 1 | awk '{printf "%.2f", $1 + $2}')
		printf '%s\treadcmp\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$k" "$PLAN_READ_MS" "$ls_main" "$ls_dis" \
			"$PLAN_PEAK_KB" "$PLAN_S" "$(cut -d' ' -f1 /proc/loadavg)" "$PLAN_CPU" "$ls_cpu" >>"$RESULTS"
		log "  read sample $k: usersync ${PLAN_READ_MS} ms, ldapsearch ${ls_main} ms + ${ls_dis} ms (plan: ${PLAN_S}s, ${PLAN_CPU}s CPU, peak RSS $(mb "$PLAN_PEAK_KB") MB; ldapsearch ${ls_cpu}s CPU)"
	done
}

# What a run that changes COUNT users should write, for the report's note.
expected_writes() { # COUNT
	if [[ $STORE == postgres ]]; then
		echo "$1 users in statements of 1000"
	else
		echo "expected $((2 * $1)) writes"
	fi
}

# --- delivery to a SCIM application (USERSYNC_BENCH_DELIVERY=1) --------------------

TARGET=bench-app

# Requests the operator has sent to applications (usersync_target_requests_total).
target_requests() {
	curl -fsS --max-time 10 "http://$METRICS_ADDR/metrics" 2>/dev/null |
		awk '/^usersync_target_requests_total\{/ {s += $NF} END {printf "%d\n", s}'
}

# The target's last cycle, as shell assignments: cycle_id, cycle_result, created,
# updated, disabled, failed, requests, full.
last_cycle() {
	kubectl -n "$NS" get ptarget "$TARGET" -o jsonpath='{.status.lastCycle}' 2>/dev/null | python3 -c '
import json, sys
text = sys.stdin.read().strip()
c = json.loads(text) if text else {}
for k, v in (("cycle_id", c.get("id", "")), ("cycle_result", c.get("result", "")),
             ("created", c.get("created", 0)), ("adopted", c.get("adopted", 0)),
             ("updated", c.get("updated", 0)), ("disabled", c.get("disabled", 0)),
             ("failed", c.get("failed", 0)), ("requests", c.get("requests", 0)),
             ("full", str(c.get("fullReconcile", False)).lower())):
    print(f"{k}={v}")
'
}

# Accounts the application holds, as its own API counts them.
app_accounts() {
	curl -fsS --max-time 60 -H @"$STATE/scim/auth-header" "$SCIM_URL/Users?count=0" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["totalResults"])'
}

# Wait for a cycle other than BEFORE and record it: deliver_record N PHASE BEFORE
# T0_NS REQUESTS_BEFORE WRITES_BEFORE
deliver_record() {
	local n=$1 phase=$2 before=$3 t0=$4 req0=$5 w0=$6 t1 wall sent served rate accounts peak op_cpu app_cpu
	local cycle_id cycle_result created adopted updated disabled failed requests full
	while :; do
		eval "$(last_cycle)"
		[[ -n $cycle_id && $cycle_id != "$before" ]] && break
		kill -0 "$OP_PID" 2>/dev/null || die "the operator exited; see its log"
		if ((FIRST_RUN_LIMIT > 0 && ($(now_ns) - t0) / 1000000000 > FIRST_RUN_LIMIT)); then
			log "  $phase: no cycle after ${FIRST_RUN_LIMIT}s; giving up"
			return 1
		fi
		sleep 0.2
	done
	t1=$(now_ns)
	wall=$(awk -v d="$((t1 - t0))" 'BEGIN {printf "%.1f", d / 1e9}')
	sent=$(($(target_requests) - req0))
	served=$(($(apiserver_user_writes) - w0))
	rate=$(awk -v r="$sent" -v d="$((t1 - t0))" 'BEGIN {printf "%.0f", r / (d / 1e9)}')
	op_cpu=$(awk -v a="$(cpu_s "$OP_PID")" -v b="$OP_CPU0" 'BEGIN {printf "%.1f", a - b}')
	app_cpu=$(awk -v a="$(cpu_s "$(<"$STATE/scim/scim.pid")")" -v b="$APP_CPU0" 'BEGIN {printf "%.1f", a - b}')
	accounts=$(app_accounts)
	rss_peak
	peak=$RSS_PEAK_KB
	printf '%s\tdelivery\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
		"$n" "$phase" "$cycle_result" "$full" "$wall" "$requests" "$sent" "$rate" "$created" "$adopted" \
		"$updated" "$failed" "$accounts" "$served" "${RSS_BEFORE_KB:-}" "$peak" "$(cut -d' ' -f1 /proc/loadavg)" \
		"$op_cpu" "$app_cpu" >>"$RESULTS"
	log "  $phase: $cycle_result (full reconcile: $full) in ${wall}s: $requests requests by the cycle's count, $sent by the metrics ($rate/s); created $created, adopted $adopted, updated $updated, failed $failed; the application holds $accounts accounts; registry writes $served; CPU: operator ${op_cpu}s, application ${app_cpu}s; RSS $(mb "${RSS_BEFORE_KB:-0}") → $(mb "$peak") MB"
	LAST_CYCLE=$cycle_id
}

# Ask the target for a cycle now (as `usersync sync` does for mappings).
request_cycle() {
	kubectl -n "$NS" annotate ptarget "$TARGET" --overwrite "usersync.dev/sync-requested-at=$(now_ns)" >/dev/null
}

# A no-change full reconcile: a spec edit makes the next cycle one.
edit_target() {
	kubectl -n "$NS" patch ptarget "$TARGET" --type merge -p '{"spec":{"fullReconcileInterval":"23h"}}' >/dev/null
}

apply_target() {
	kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: usersync.dev/v1alpha1
kind: ProvisioningTarget
metadata:
  name: $TARGET
spec:
  endpoint: $SCIM_URL
  # scim2-server listens on 127.0.0.1 only.
  allowInsecureHttp: true
  auth:
    bearerTokenSecretRef: {name: bench-scim-token, key: token}
  users:
    mappings: [$MAPPING]
  interval: 24h
  fullReconcileInterval: 24h
EOF
}

# Start a cycle with CMD and record it: deliver_step N PHASE CMD...
deliver_step() {
	local n=$1 phase=$2 req0 w0 t0
	shift 2
	req0=$(target_requests)
	w0=$(apiserver_user_writes)
	rss_reset
	OP_CPU0=$(cpu_s "$OP_PID")
	APP_CPU0=$(cpu_s "$(<"$STATE/scim/scim.pid")")
	t0=$(now_ns)
	"$@"
	deliver_record "$n" "$phase" "$LAST_CYCLE" "$t0" "$req0" "$w0"
}

# The registry goes to a fresh tenant of the SCIM server: the first delivery, a
# no-change cycle, a no-change full reconcile and a cycle after 1 % of the users
# changed their displayName.
deliver() { # N
	local n=$1
	[[ -e $(usersync_scim_venv)/.complete ]] || bash "$repo/tests/lib/deps.sh" scim >&2
	bash "$repo/tests/scim.sh" up >/dev/null
	eval "$(bash "$repo/tests/scim.sh" env)"
	SCIM_URL=$USERSYNC_SCIM_ROOT/bench-$n-$(date +%s)/v2
	log "  delivery to $SCIM_URL"
	kubectl -n "$NS" create secret generic bench-scim-token \
		--from-file=token="$USERSYNC_SCIM_TOKEN_FILE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	kubectl -n "$NS" label secret bench-scim-token usersync.dev/credential=true --overwrite >/dev/null
	LAST_CYCLE=
	deliver_step "$n" first apply_target || return 0
	deliver_step "$n" no-change request_cycle || return 0
	deliver_step "$n" no-change-full edit_target || return 0
	log "  changing the displayName of $((n / 100)) users and syncing the mapping"
	change_one_percent "$n" delivery
	sync_now delivery
	deliver_step "$n" change request_cycle || return 0
}

# --- the raw-write baseline (USERSYNC_BENCH_RAW) ------------------------------------

# bench/rawwrite, built like the tests' Go tools: cached by a hash of its module.
build_rawwrite() {
	local module=$here/rawwrite dir
	dir=$(usersync_cache_dir)/rawwrite/$(usersync_go_key "$module" 1)
	if [[ ! -x $dir/bin/rawwrite ]]; then
		log "building bench/rawwrite into $dir"
		build_into() { (cd "$module" && usersync_go_env && go build -trimpath -ldflags "-s -w" -o "$1/bin/rawwrite" .); }
		usersync_cached_build "$dir" build_into
	fi
	RAWWRITE=$dir/bin/rawwrite
}

# The DirectoryUsers as the import left them, one a line: what rawwrite sends.
dump_objects() { # N
	local file=$STATE/objects-$1.jsonl
	kubectl -n "$NS" get directoryusers -o json | python3 -c '
import json, sys
for u in json.load(sys.stdin)["items"]:
    m = u["metadata"]
    obj = {"apiVersion": u["apiVersion"], "kind": u["kind"],
           "metadata": {"name": m["name"], "labels": m.get("labels", {})},
           "spec": u["spec"], "status": u.get("status")}
    print(json.dumps(obj, separators=(",", ":")))
' >"$file"
	log "  $(wc -l <"$file") objects kept in $file for the raw-write baseline"
}

# The API server's write ceiling for the import's requests, taken right after the
# import on the same control plane (the machine's load changes by the minute):
# rawwrite creates the same objects in a namespace of its own, which the operator
# does not watch, and applies their status, 16 in flight.
raw_writes() { # N
	local n=$1 out load
	log "  raw-write baseline: $(wc -l <"$STATE/objects-$n.jsonl") objects into $NS-raw"
	kubectl create namespace "$NS-raw" >/dev/null
	load=$(cut -d' ' -f1 /proc/loadavg)
	out=$("$RAWWRITE" --namespace "$NS-raw" --workers 16 -f "$STATE/objects-$n.jsonl") || log "  rawwrite reported failures: $out"
	printf '%s\traw\t%s\tload=%s\n' "$n" "$out" "$load" >>"$RESULTS"
	log "  raw writes: $out; load $load"
}

bench_size() { # N
	local n=$1 oplog=$STATE/operator-$1.log samples=$STATE/samples-$1.tsv
	local enabled=$(($1 - ($1 >= 7 ? ($1 - 7) / 33 + 1 : 0)))
	local before hwm cp_hwm etcd_db t_start mode
	log "=== $n users ($enabled enabled) ==="
	start_cluster
	start_slapd "$n"
	[[ $STORE != postgres ]] || start_postgres
	install_objects
	# One dump first, so that neither the operator's first read nor the ldapsearch
	# timings meet a cold slapd.
	svc_ldapsearch -LLL -E "pr=$PAGE/noprompt" -b "$STAFF_BASE" -s sub "$FILTER" "${ATTRS[@]}" >/dev/null
	local plan_import plan_resync=""
	read_comparison "$n"
	plan_import="$PLAN_PEAK_KB $PLAN_S $PLAN_CPU"
	if [[ $READ_ONLY == 1 ]]; then
		[[ $KEEP == 1 ]] || bash "$repo/tests/cluster.sh" down "$CLUSTER_DIR" >/dev/null 2>&1 || true
		return
	fi
	OP_PEAK_KB=0
	RSS_BEFORE_KB=
	before=$(apiserver_user_writes)
	WAL_BEFORE=$(wal_lsn)
	RUN_CPU0=0
	PG_CPU0=$(pg_cpu_s)
	start_operator "$oplog"
	start_sampler "$samples"
	t_start=$SECONDS

	if wait_first_run "$oplog" "$samples" "$((2 * enabled))"; then
		record "$n" import "$oplog" "$before" "$(expected_writes "$enabled")"
		if [[ $RAW == 1 ]]; then
			dump_objects "$n"
			raw_writes "$n"
		fi
		for mode in $MODES; do
			resync_and_change "$n" "$oplog" "$mode"
		done
		[[ $DELIVERY != 1 ]] || deliver "$n"
		if has_incremental; then
			kubectl -n "$NS" patch spol bench --type merge -p '{"spec":{"incremental":false}}' >/dev/null
		fi
		plan_resync=$(plan_only)
		plan_resync=${plan_resync% *}
		read -r PLAN_PEAK_KB PLAN_S PLAN_CPU <<<"$plan_resync"
		log "  usersync plan of a no-change full resync: peak RSS $(mb "$PLAN_PEAK_KB") MB in ${PLAN_S}s (${PLAN_CPU}s CPU)"
	else
		# Abandoned: report the write rate instead of waiting it out.
		local served elapsed rate rate_recent eta read_line read_ms entries ls_main ls_dis
		served=$(($(apiserver_user_writes) - before))
		elapsed=$((SECONDS - t_start))
		rate=$(awk -v w="$served" -v s="$elapsed" 'BEGIN {printf "%.0f", w / s}')
		rate_recent=$(awk -F'\t' 'NR > 1 && $4 != "" {t[NR] = $1; w[NR] = $4; last = NR}
			END {f = last - 30; if (f < 2) f = 2; if (t[last] > t[f]) printf "%.0f", (w[last] - w[f]) / (t[last] - t[f]); else print "-"}' "$samples")
		eta=$(awk -v r="$rate_recent" -v e="$((2 * enabled))" 'BEGIN {if (r > 0) printf "%.0f", e / r / 60; else print "?"}')
		log "  first run not finished after ${elapsed}s: $served of ~$((2 * enabled)) writes served, $rate writes/s overall, $rate_recent writes/s over the last 5 min (the whole import would take ~${eta} min)"
		read_line=$(grep '"message":"directory read"' "$oplog" | tail -n 1 || true)
		read_ms=$(sed -n 's/.*"read_ms":\([0-9]*\).*/\1/p' <<<"$read_line")
		entries=$(sed -n 's/.*"entries":\([0-9]*\).*/\1/p' <<<"$read_line")
		ls_main=$(ldapsearch_ms "$FILTER" "${ATTRS[@]}")
		ls_dis=$(ldapsearch_ms "$DISABLED_FILTER" entryUUID)
		rss_peak
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
			"$n" import full abandoned ">$elapsed" "$entries" "$read_ms" "$ls_main" "$ls_dis" \
			"$(ratio_of "$read_ms" "$ls_main")" "$(ratio_of "$read_ms" "$((ls_main + ls_dis))")" \
			"-" "$served" "" "" "" "$RSS_PEAK_KB" "$(cut -d' ' -f1 /proc/loadavg)" \
			"abandoned after ${elapsed}s: $rate_recent writes/s, whole import ~${eta} min" >>"$RESULTS"
	fi

	rss_peak
	hwm=$OP_PEAK_KB
	cp_hwm=$(vm_kb "$(cluster_pid)" VmHWM)
	stop_process "$SAMPLER_PID" 15
	SAMPLER_PID=
	stop_process "$OP_PID" 120
	OP_PID=
	etcd_db=$(stat -c %s "$CLUSTER_DIR"/etcd/member/snap/db 2>/dev/null || echo 0)
	printf '%s\tmemory\toperator_hwm_kb=%s\tcontrolplane_hwm_kb=%s\tetcd_db_bytes=%s\tseed_s=%s\tplan_import=%s\tplan_resync=%s\n' \
		"$n" "$hwm" "$cp_hwm" "$etcd_db" "$SEED_S" "$plan_import" "$plan_resync" >>"$RESULTS"
	log "  operator peak RSS $(mb "$hwm") MB; control plane peak RSS $(mb "$cp_hwm") MB; etcd db $((etcd_db / 1048576)) MiB"
	if grep -qiE 'database space exceeded|NOSPACE' "$CLUSTER_DIR/controlplane.log" 2>/dev/null; then
		log "  WARNING: etcd ran out of quota (see $CLUSTER_DIR/controlplane.log)"
	fi
	if [[ $STORE == postgres ]]; then
		printf '%s\tpg\t%s\n' "$n" "$(pg_sizes | tr '\n' '\t' | sed 's/\t$//')" >>"$RESULTS"
		log "  PostgreSQL: $(pg_sizes | tr '\n' ' ')"
	fi
	cp "$CLUSTER_DIR/controlplane.log" "$STATE/controlplane-$n.log" 2>/dev/null || true
	bash "$repo/tests/cluster.sh" down "$CLUSTER_DIR" >/dev/null 2>&1 || true
}

report() {
	python3 - "$RESULTS" "$RATIO_TARGET" "$RSS_TARGET_MB" "$RSS_TARGET_USERS" "$STORE" "$RAW_TARGET" <<'PY'
import json, statistics, sys
path, ratio_target, rss_target, rss_users, store, raw_target = sys.argv[1:7]
ratio_target, rss_target, rss_users, raw_target = float(ratio_target), float(rss_target), int(rss_users), float(raw_target)
runs, mem, readcmp, pg, raw, delivery = [], {}, {}, {}, {}, []
for line in open(path):
    f = line.rstrip("\n").split("\t")
    if f[1] == "memory":
        mem[f[0]] = dict(kv.split("=", 1) for kv in f[2:])
    elif f[1] == "readcmp":
        readcmp.setdefault(f[0], []).append(f)
    elif f[1] == "pg":
        pg[f[0]] = dict(kv.split("=", 1) for kv in f[2:] if "=" in kv)
    elif f[1] == "raw":
        try:
            raw[f[0]] = json.loads(f[2]) | dict(kv.split("=", 1) for kv in f[3:])
        except ValueError:
            pass
    elif f[1] == "delivery":
        delivery.append(f)
    else:
        runs.append(f + [""] * (21 - len(f)))
def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None
def mbs(kb):
    kb = num(kb)
    return f"{kb / 1024:.0f} MB" if kb else "-"
def mib(b):
    b = num(b)
    if b is None:
        return "-"
    return f"{b / 1048576:.1f} MiB" if b >= 1048576 else f"{b / 1024:.1f} KiB"
print()
print(f"Store: {store}.")
print()
cpu_head = "CPU s: operator / PostgreSQL" if store == "postgres" else "operator CPU s"
print(f"| users | run | read | result | wall (s) | entries read | read (ms) | ldapsearch (ms), + disabled search | ratio | ratio vs both searches | API writes | apiserver writes | before read (s) | after read (s) | RSS before → peak | WAL | {cpu_head} | load | note |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for f in runs:
    n, phase, mode, result, dur, entries, read, lsm, lsd, ratio, ratio_both, writes, served, pre, post, before, peak, load, note, wal, cpu = f[:21]
    print(f"| {int(n):,} | {phase} | {mode} | {result} | {dur} | {entries} | {read} | {lsm} + {lsd} | {ratio} | {ratio_both} | {writes} | {served} | {pre} | {post} | {mbs(before)} → {mbs(peak)} | {mib(wal) if wal else '-'} | {cpu or '-'} | {load} | {note} |")
print()
print("| users | operator peak RSS | `usersync plan` peak RSS / time: import | … no-change full resync | control plane peak RSS | etcd db | slapadd seed (s) |")
print("|---|---|---|---|---|---|---|")
def plan(v):
    parts = (v or "").split()
    return f"{mbs(parts[0])} / {parts[1]} s" if len(parts) >= 2 else "-"
for n, m in mem.items():
    db = num(m.get("etcd_db_bytes")) or 0
    print(f"| {int(n):,} | {mbs(m.get('operator_hwm_kb'))} | {plan(m.get('plan_import'))} | {plan(m.get('plan_resync'))} | {mbs(m.get('controlplane_hwm_kb'))} | {db / 1048576:.0f} MiB | {m.get('seed_s', '-')} |")
if pg:
    print()
    print("PostgreSQL tables at the end of each size (pg_total_relation_size: heap, TOAST and indexes):")
    print()
    print("| users | table | rows | heap | indexes | total | bytes per user row |")
    print("|---|---|---|---|---|---|---|")
    for n, m in pg.items():
        users = num(m.get("users_rows")) or 0
        for t in ("users", "transitions", "runs", "deliveries"):
            total = num(m.get(f"{t}_total"))
            per = f"{total / users:.0f}" if users and total is not None else "-"
            print(f"| {int(n):,} | {t} | {m.get(f'{t}_rows', '-')} | {mib(m.get(f'{t}_heap'))} | {mib(m.get(f'{t}_indexes'))} | {mib(total)} | {per} |")
verdicts_raw = []
if raw:
    print()
    print("Import against the raw-write baseline (bench/rawwrite right after it: the same objects, a create and a status apply each, 16 in flight, into another namespace):")
    print()
    print("| users | usersync import: writes / s | writes/s | load | rawwrite: writes / s | writes/s | load | ratio |")
    print("|---|---|---|---|---|---|---|---|")
for n, r in raw.items():
    imp = next((f for f in runs if f[0] == n and f[1] == "import" and f[3] == "Succeeded"), None)
    if imp is None or not r.get("writes_per_second"):
        continue
    w, d = num(imp[12]) or num(imp[11]), num(imp[4])
    if not w or not d:
        continue
    rate = w / d
    ratio = rate / r["writes_per_second"]
    print(f"| {int(n):,} | {w:.0f} / {d:.1f} | {rate:.0f} | {imp[17]} | {r['writes']} / {r['seconds']:.1f} | {r['writes_per_second']:.0f} | {r.get('load', '-')} | **{ratio:.2f}×** |")
    verdicts_raw.append((n, rate, r["writes_per_second"], ratio))
if delivery:
    print()
    print("Delivery to scim2-server (a ProvisioningTarget over the mapping's users):")
    print()
    print("| users | cycle | result | full reconcile | wall (s) | requests (cycle) | requests (metrics) | requests/s | created | adopted | updated | failed | accounts in the app | registry writes | CPU s: operator / application | RSS before → peak | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for f in delivery:
        f = f + [""] * (20 - len(f))
        n, _, phase, result, full, wall, req, sent, rate, created, adopted, updated, failed, accounts, served, before, peak, load, op_cpu, app_cpu = f[:20]
        print(f"| {int(n):,} | {phase} | {result} | {full} | {wall} | {req} | {sent} | {rate} | {created} | {adopted} | {updated} | {failed} | {accounts} | {served} | {op_cpu} / {app_cpu} | {mbs(before)} → {mbs(peak)} | {load} |")
print()
print("Full reads next to ldapsearch: interleaved samples before the import (usersync plan), and the full reads of the runs above.")
print()
print("| users | samples | usersync read (ms), median [min–max] | ldapsearch (ms) | + disabled search (ms) | ratio | ratio vs both searches | CPU s: usersync plan / ldapsearch | load |")
print("|---|---|---|---|---|---|---|---|---|")
verdicts = []
def row(n, label, reads, mains, diss, loads, cpu="-"):
    read, main, dis = (statistics.median(x) for x in (reads, mains, diss))
    ratio, ratio_both = read / main, read / (main + dis)
    print(f"| {int(n):,} | {label} | {read:.0f} [{min(reads):.0f}–{max(reads):.0f}] | {main:.0f} [{min(mains):.0f}–{max(mains):.0f}] | {dis:.0f} | {ratio:.2f} | {ratio_both:.2f} | {cpu} | {loads} |")
    return read, main, dis, ratio, ratio_both
for n in dict.fromkeys([*readcmp, *(f[0] for f in runs)]):
    samples = [f for f in readcmp.get(n, []) if num(f[3]) is not None and num(f[4])]
    if samples:
        cpus = [(num(f[9]), num(f[10])) for f in samples if len(f) > 10 and num(f[9]) is not None and num(f[10]) is not None]
        cpu = (f"{statistics.median(c[0] for c in cpus):.2f} / {statistics.median(c[1] for c in cpus):.2f}") if cpus else "-"
        r = row(n, f"{len(samples)} × usersync plan", [num(f[3]) for f in samples], [num(f[4]) for f in samples],
                [num(f[5]) for f in samples], " ".join(f[8] for f in samples), cpu)
        verdicts.append((n, f"median of {len(samples)} interleaved samples", r))
    full = [f for f in runs if f[0] == n and f[2] == "full" and num(f[6]) is not None and num(f[7])]
    if full:
        r = row(n, f"{len(full)} × full reads in runs", [num(f[6]) for f in full], [num(f[7]) for f in full],
                [num(f[8]) for f in full], " ".join(f[17] for f in full))
        if not samples:
            verdicts.append((n, f"median of {len(full)} full reads in runs", r))
print()
print("| target | users | measured | verdict |")
print("|---|---|---|---|")
for n, how, (read, main, dis, ratio, ratio_both) in verdicts:
    verdict = "PASS" if ratio <= ratio_target else "FAIL"
    print(f"| full read <= {ratio_target}x ldapsearch ({how}) | {int(n):,} | {read:.0f} ms vs {main:.0f} ms: {ratio:.2f}x ({ratio_both:.2f}x vs both searches) | {verdict} |")
for f in runs:
    if f[1].startswith("resync"):
        verdict = "PASS" if num(f[11]) == 0 and num(f[12]) == 0 else "FAIL"
        print(f"| zero writes on a no-change resync ({f[2]} read) | {int(f[0]):,} | {f[11]} (apiserver {f[12]}) | {verdict} |")
if store == "postgres":
    for f in runs:
        if int(f[0]) < 1000000 or num(f[4]) is None:
            continue
        if f[1] == "import":
            print(f"| first import <= 60 s | {int(f[0]):,} | {f[4]} s | {'PASS' if num(f[4]) <= 60 else 'FAIL'} |")
        elif f[1].startswith("resync"):
            print(f"| no-change resync <= 5 s ({f[2]} read) | {int(f[0]):,} | {f[4]} s | {'PASS' if num(f[4]) <= 5 else 'FAIL'} |")
for n, rate, ceiling, ratio in verdicts_raw:
    print(f"| import >= {raw_target}x the raw-write ceiling | {int(n):,} | {rate:.0f} vs {ceiling:.0f} writes/s: {ratio:.2f}x | {'PASS' if ratio >= raw_target else 'FAIL'} |")
for f in delivery:
    if f[2] == "no-change":
        print(f"| zero requests on a no-change delivery cycle | {int(f[0]):,} | {f[6]} (metrics {f[7]}) | {'PASS' if num(f[6]) == 0 and num(f[7]) == 0 else 'FAIL'} |")
for n, m in mem.items():
    kb = num(m.get("operator_hwm_kb"))
    if kb is None:
        continue
    verdict = ("PASS" if kb / 1024 <= rss_target else "FAIL") if int(n) >= rss_users else f"(target is for {rss_users:,})"
    print(f"| operator peak RSS <= {rss_target:.0f} MB at {rss_users:,} | {int(n):,} | {kb / 1024:.0f} MB | {verdict} |")
PY
}

# --- main --------------------------------------------------------------------------

: >"$RESULTS"
command -v ldapsearch >/dev/null || bash "$repo/tests/lib/deps.sh" slapd
build
[[ $RAW != 1 ]] || build_rawwrite
for n in "${sizes[@]}"; do
	bench_size "$n"
done
{
	printf '\nusersync bench, %s, %s cores, %s GiB RAM, %s\n' "$(date -u +%FT%TZ)" "$(nproc)" \
		"$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
	report
} | tee "$STATE/report.md"
