#!/usr/bin/env bash
# usersync benchmark of push mode (run on demand; not part of CI): how long an
# ldapmodify takes to reach the registry, and what the operator costs while
# nothing changes. See bench/README.md.
#
#   bash bench/push.sh [N]     N staff users in OpenLDAP (default 10000)
#   bash bench/push.sh down    stop the servers (when kept with KEEP=1)
#
# A fresh control plane (tests/cluster.sh) and OpenLDAP seeded with N users
# (tests/slapd.sh seed), the CRDs, a policy in push mode with a 1h interval, an
# OpenLDAP connector and one mapping over ou=Staff; the release `usersync run` as
# a process. After the first import and the run its push channel starts:
#   1. idle CPU: the operator's CPU time (utime + stime) over IDLE_SECONDS with
#      nothing changing, as a share of one core;
#   2. change-to-visible latency, SAMPLES times, one change at a time: in turn a
#      displayName change, a disable (pwdAccountLockedTime), a rename (modrdn of
#      uid) of an enabled user and an added user, by ldapmodify, timed from just before ldapmodify starts to the
#      moment a watch of the DirectoryUsers (`kubectl get -w`) shows it; p50 and
#      p95 are printed.
# Everything lives apart from dev, test and bench/run.sh instances: state in
# $USERSYNC_BENCH_PUSH_STATE (default /tmp/usersync-bench-push), slapd on
# 127.0.0.1:34389 (LDAPS 34636), namespace usersync-bench-push. Knobs:
#   USERSYNC_BENCH_PUSH_SAMPLES  changes measured (default 20)
#   USERSYNC_BENCH_PUSH_IDLE     seconds of idle CPU measurement (default 60)
#   USERSYNC_BENCH_KEEP=1        leave the servers running at the end
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../tests/lib/common.sh
source "$repo/tests/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

export USERSYNC_STATE=${USERSYNC_BENCH_PUSH_STATE:-/tmp/usersync-bench-push}
export USERSYNC_SLAPD_PORT=${USERSYNC_BENCH_PUSH_LDAP_PORT:-34389}
export USERSYNC_SLAPD_LDAPS_PORT=${USERSYNC_BENCH_PUSH_LDAPS_PORT:-34636}
unset USERSYNC_SLAPD_DIR
SAMPLES=${USERSYNC_BENCH_PUSH_SAMPLES:-20}
IDLE_SECONDS=${USERSYNC_BENCH_PUSH_IDLE:-60}
KEEP=${USERSYNC_BENCH_KEEP:-0}
NS=usersync-bench-push
SUFFIX=dc=example,dc=org
STAFF_BASE=ou=Staff,$SUFFIX
STATE=$USERSYNC_STATE
CLUSTER_DIR=$STATE/cluster
OP_PID=
WATCH_PID=

if [[ ${1:-} == down ]]; then
	servers_down
	exit 0
fi
N=${1:-10000}
[[ $N =~ ^[0-9]+$ ]] && ((N >= 100)) || die "the size is a number of users >= 100, got '$N'"
((SAMPLES >= 2)) || die "USERSYNC_BENCH_PUSH_SAMPLES must be at least 2"

cleanup() {
	stop_process "$WATCH_PID"
	stop_process "$OP_PID"
	if [[ $KEEP != 1 ]]; then
		servers_down
	else
		log "servers kept running (state in $STATE); 'bash bench/push.sh down' stops them"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$STATE"
cd "$repo"

build
start_cluster

log "seeding $N users with slapadd"
bash "$repo/tests/slapd.sh" seed "$N" >/dev/null
bash "$repo/tests/slapd.sh" up >/dev/null
eval "$(bash "$repo/tests/slapd.sh" env)"
[[ $USERSYNC_SLAPD_URL == "ldap://127.0.0.1:$USERSYNC_SLAPD_PORT" ]] ||
	die "slapd answers on $USERSYNC_SLAPD_URL, not port $USERSYNC_SLAPD_PORT"

install_base
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: usersync.dev/v1alpha1
kind: SyncPolicy
metadata: {name: bench}
spec:
  interval: 1h
  push: true
  safety: {maxPreservePercent: 100}
---
apiVersion: usersync.dev/v1alpha1
kind: ConnectorHealth
metadata: {name: bench-ldap}
spec:
  ldap:
    url: $USERSYNC_SLAPD_URL
    # slapd listens on 127.0.0.1 only.
    allowPlaintextBind: true
    bindDN: $USERSYNC_SLAPD_BIND_DN
    bindPasswordSecretRef: {name: bench-ldap-bind, key: password}
    flavor: OpenLDAP
    pageSize: 1000
    timeout: 120s
  probeInterval: 1m
---
apiVersion: usersync.dev/v1alpha1
kind: DirectoryMapping
metadata: {name: staff}
spec:
  connectorRef: bench-ldap
  policyRef: bench
  profile: staff
  ldap: {baseDN: "$STAFF_BASE"}
  attributes: {username: uid, email: mail, displayName: displayName}
EOF

log "starting the operator"
"$BIN" run --namespace "$NS" --log-format json >"$STATE/operator.log" 2>&1 </dev/null &
OP_PID=$!

mapping_field() { kubectl -n "$NS" get dmap staff -o "jsonpath=$1" 2>/dev/null || true; }
imported() { [[ -n $(mapping_field '{.status.lastRun.finishTime}') ]]; }
listening() { [[ $(mapping_field '{.status.conditions[?(@.type=="Push")].reason}') == Listening ]]; }
idle() { [[ $(mapping_field '{.status.syncInProgress}') != true ]]; }
log "waiting for the first import of $N users"
wait_for 3600 imported || die "no run finished"
wait_for 120 listening || die "the push channel did not open: $(mapping_field '{.status.conditions}')"
sleep 5
wait_for 600 idle || die "a run is still in progress"
log "first run: $(mapping_field '{.status.lastRun.message}')"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$OP_PID/stat"; }
log "measuring idle CPU for ${IDLE_SECONDS}s"
t0=$(cpu_ticks)
sleep "$IDLE_SECONDS"
t1=$(cpu_ticks)
hz=$(getconf CLK_TCK)
idle_pct=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$IDLE_SECONDS" 'BEGIN {printf "%.2f", 100 * d / hz / s}')
rss_mb=$(awk '$1 == "VmRSS:" {printf "%.0f", $2 / 1024}' "/proc/$OP_PID/status")

# Every change the API server sees of a DirectoryUser, one line each, timestamped.
# The watch is the background process (its PID is the one stopped); the stamping
# loop ends when it does.
kubectl -n "$NS" get directoryusers --watch-only \
	-o 'jsonpath={.spec.username} {.spec.displayName} {.status.state}{"\n"}' \
	> >(while IFS= read -r line; do printf '%s %s\n' "$(date +%s%N)" "$line"; done >"$STATE/watch.log") &
WATCH_PID=$!
sleep 2

# Users to change: enabled ones (the seed locks every i with i % 33 == 7).
latencies=()
i=0
for ((k = 1; i < SAMPLES; k += 97)); do
	((k % 33 == 7)) && continue
	uid=$(printf 'user%06d' "$k")
	# Each kind in turn: a displayName change, a disable, a rename, an added user.
	case $((i % 4)) in
	0)
		ldif="dn: uid=$uid,$STAFF_BASE
changetype: modify
replace: displayName
displayName: Pushed $i"
		seen_as=$uid expect=" Pushed $i "
		;;
	1)
		ldif="dn: uid=$uid,$STAFF_BASE
changetype: modify
replace: pwdAccountLockedTime
pwdAccountLockedTime: 000001010000Z"
		seen_as=$uid expect=" Preserved"
		;;
	2)
		ldif="dn: uid=$uid,$STAFF_BASE
changetype: modrdn
newrdn: uid=$uid-renamed
deleteoldrdn: 1"
		seen_as=$uid-renamed expect=" Active"
		;;
	3)
		ldif="dn: uid=pushed$i,$STAFF_BASE
changetype: add
objectClass: inetOrgPerson
uid: pushed$i
cn: Pushed $i
sn: $i
displayName: Pushed user $i
mail: pushed$i@example.org"
		seen_as=pushed$i expect=" Active"
		;;
	esac
	t0=$(date +%s%N)
	printf '%s\n' "$ldif" | bash "$repo/tests/slapd.sh" ldap ldapmodify >/dev/null
	seen=
	for ((w = 0; w < 600; w++)); do
		seen=$(awk -v u="$seen_as" -v e="$expect" '$2 == u && index($0, e) {print $1; exit}' "$STATE/watch.log")
		[[ -n $seen ]] && break
		sleep 0.1
	done
	[[ -n $seen ]] || die "$seen_as: the change did not reach the registry within 60 s"
	latencies+=($(((seen - t0) / 1000000)))
	log "change $((i + 1))/$SAMPLES ($seen_as): $((latencies[-1])) ms"
	i=$((i + 1))
	# The next change after this one's run has ended: one change at a time.
	sleep 2
	wait_for 120 idle || die "a run is still in progress"
done

read -r p50 p95 max < <(printf '%s\n' "${latencies[@]}" | sort -n | awk '
	{a[NR] = $1}
	END {
		i50 = int((NR + 1) / 2); i95 = int(NR * 0.95 + 0.999); if (i95 > NR) i95 = NR
		print a[i50], a[i95], a[NR]
	}')
runs=$(grep -c '"message":"run finished"' "$STATE/operator.log" || true)
cat <<EOF | tee "$STATE/report.md"
| users | changes | change-to-visible p50 | p95 | max | operator idle CPU (${IDLE_SECONDS} s) | operator RSS idle | runs |
|---|---|---|---|---|---|---|---|
| $N | $SAMPLES (displayName, disable, rename, add) | $p50 ms | $p95 ms | $max ms | ${idle_pct} % of one core | $rss_mb MB | $runs |
EOF
