#!/usr/bin/env bash
# usersync benchmark of push mode (run on demand; not part of CI): how long an
# ldapmodify takes to reach the registry, and what the operator costs while
# nothing changes. See bench/README.md.
#
#   bash bench/push.sh [N]     N staff users in OpenLDAP (default 10000)
#   USERSYNC_BENCH_PUSH_DIRECTORY=samba bash bench/push.sh [N]   ... in a Samba AD DC
#   bash bench/push.sh down    stop the servers (when kept with KEEP=1)
#
# A fresh control plane (tests/cluster.sh) and OpenLDAP seeded with N users
# (tests/slapd.sh seed) or a Samba AD DC seeded likewise (tests/samba.sh seed),
# the CRDs, a policy in push mode with a 1h interval, an OpenLDAP (or
# ActiveDirectory) connector and one mapping over ou=Staff; the release
# `usersync run` as
# a process. After the first import and the run its push channel starts:
#   1. idle CPU: the operator's CPU time (utime + stime) over IDLE_SECONDS with
#      nothing changing, as a share of one core;
#   2. change-to-visible latency, SAMPLES times, one change at a time: in turn a
#      displayName change, a disable (pwdAccountLockedTime; on AD
#      userAccountControl), a rename (modrdn of uid; on AD a new sAMAccountName)
#      of an enabled user and an added user (on AD by `samba-tool user create`,
#      whose start-up of about a second counts in its figure), by ldapmodify,
#      timed from just before ldapmodify starts to the
#      moment a watch of the DirectoryUsers (`kubectl get -w`) shows it; p50 and
#      p95 are printed.
# Everything lives apart from dev, test and bench/run.sh instances: state in
# $USERSYNC_BENCH_PUSH_STATE (default /tmp/usersync-bench-push), slapd on
# 127.0.0.1:34389 (LDAPS 34636), the Samba DC on 127.0.0.9
# (USERSYNC_BENCH_PUSH_AD_ADDR), namespace usersync-bench-push. Knobs:
#   USERSYNC_BENCH_PUSH_DIRECTORY  openldap (default) or samba
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
export USERSYNC_AD_ADDR=${USERSYNC_BENCH_PUSH_AD_ADDR:-127.0.0.9}
unset USERSYNC_SLAPD_DIR
DIRECTORY=${USERSYNC_BENCH_PUSH_DIRECTORY:-openldap}
[[ $DIRECTORY == openldap || $DIRECTORY == samba ]] ||
	die "USERSYNC_BENCH_PUSH_DIRECTORY is openldap or samba, got '$DIRECTORY'"
SAMPLES=${USERSYNC_BENCH_PUSH_SAMPLES:-20}
IDLE_SECONDS=${USERSYNC_BENCH_PUSH_IDLE:-60}
KEEP=${USERSYNC_BENCH_KEEP:-0}
NS=usersync-bench-push
SUFFIX=dc=example,dc=org
STATE=$USERSYNC_STATE
CLUSTER_DIR=$STATE/cluster
OP_PID=
WATCH_PID=

if [[ ${1:-} == down ]]; then
	bash "$repo/tests/samba.sh" down >/dev/null 2>&1 || true
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
		bash "$repo/tests/samba.sh" down >/dev/null 2>&1 || true
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

if [[ $DIRECTORY == openldap ]]; then
	start_slapd "$N"
	URL=$USERSYNC_SLAPD_URL BIND_DN=$USERSYNC_SLAPD_BIND_DN FLAVOR=OpenLDAP
	STAFF_BASE=ou=Staff,$SUFFIX
	ATTRIBUTES='{username: uid, email: mail, displayName: displayName}'
	LDAP_TOOL=$repo/tests/slapd.sh
else
	log "seeding $N users into a Samba AD DC"
	bash "$repo/tests/samba.sh" seed "$N" >/dev/null
	bash "$repo/tests/samba.sh" up >/dev/null
	eval "$(bash "$repo/tests/samba.sh" env)"
	BIND_PASSWORD_FILE=$USERSYNC_AD_BIND_PASSWORD_FILE
	URL=$USERSYNC_AD_URL BIND_DN=$USERSYNC_AD_BIND_DN FLAVOR=ActiveDirectory
	STAFF_BASE=OU=Staff,$USERSYNC_AD_BASE_DN
	ATTRIBUTES='{}'
	LDAP_TOOL=$repo/tests/samba.sh
fi

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
    url: $URL
    # The directory listens on a loopback address only.
    allowPlaintextBind: true
    bindDN: "$BIND_DN"
    bindPasswordSecretRef: {name: bench-ldap-bind, key: password}
    flavor: $FLAVOR
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
  attributes: $ATTRIBUTES
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
log "last run before the measurements: $(mapping_field '{.status.lastRun.message}')"

# Started before the idle measurement: kubectl lists every DirectoryUser before it
# watches (half a minute at 100k on a busy machine), and a change made before the
# list ends would be reported late. It costs the operator nothing.
# Every change the API server sees of a DirectoryUser, one line each, timestamped.
# The watch is the background process (its PID is the one stopped); the stamping
# loop ends when it does.
kubectl -n "$NS" get directoryusers --watch-only \
	-o 'jsonpath={.spec.username} {.spec.displayName} {.status.state}{"\n"}' \
	> >(while IFS= read -r line; do printf '%s %s\n' "$(date +%s%N)" "$line"; done >"$STATE/watch.log") &
WATCH_PID=$!

cpu_ticks() { awk '{print $14 + $15}' "/proc/$OP_PID/stat"; }
log "measuring idle CPU for ${IDLE_SECONDS}s"
t0=$(cpu_ticks)
sleep "$IDLE_SECONDS"
t1=$(cpu_ticks)
hz=$(getconf CLK_TCK)
idle_pct=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$IDLE_SECONDS" 'BEGIN {printf "%.2f", 100 * d / hz / s}')
rss_mb=$(awk '$1 == "VmRSS:" {printf "%.0f", $2 / 1024}' "/proc/$OP_PID/status")

# Users to change: enabled ones (the seed locks every i with i % 33 == 7).
latencies=()
i=0
# Spread over the users, 97 apart where there are enough of them.
stride=$((N / (SAMPLES + 2)))
((stride > 97)) && stride=97
((stride < 1)) && stride=1
for ((k = 1; i < SAMPLES; k += stride)); do
	((k % 33 == 7)) && continue
	uid=$(printf 'user%06d' "$k")
	# Each kind in turn: a displayName change, a disable, a rename, an added user.
	dn=uid=$uid,$STAFF_BASE
	[[ $DIRECTORY == samba ]] && dn=CN=$uid,$STAFF_BASE
	ldif= tool=
	case $((i % 4)) in
	0)
		ldif="dn: $dn
changetype: modify
replace: displayName
displayName: Pushed $i"
		seen_as=$uid expect=" Pushed $i "
		;;
	1)
		if [[ $DIRECTORY == samba ]]; then
			ldif="dn: $dn
changetype: modify
replace: userAccountControl
userAccountControl: 514"
		else
			ldif="dn: $dn
changetype: modify
replace: pwdAccountLockedTime
pwdAccountLockedTime: 000001010000Z"
		fi
		seen_as=$uid expect=" Preserved"
		;;
	2)
		if [[ $DIRECTORY == samba ]]; then
			ldif="dn: $dn
changetype: modify
replace: sAMAccountName
sAMAccountName: $uid-renamed"
		else
			ldif="dn: $dn
changetype: modrdn
newrdn: uid=$uid-renamed
deleteoldrdn: 1"
		fi
		seen_as=$uid-renamed expect=" Active"
		;;
	3)
		if [[ $DIRECTORY == samba ]]; then
			tool="user create pushed$i --random-password --use-username-as-cn --userou=OU=Staff --given-name=Pushed --surname=$i"
		else
			ldif="dn: uid=pushed$i,$STAFF_BASE
changetype: add
objectClass: inetOrgPerson
uid: pushed$i
cn: Pushed $i
sn: $i
displayName: Pushed user $i
mail: pushed$i@example.org"
		fi
		seen_as=pushed$i expect=" Active"
		;;
	esac
	t0=$(date +%s%N)
	if [[ -n $tool ]]; then
		# shellcheck disable=SC2086 # the words of the command
		bash "$LDAP_TOOL" tool $tool >/dev/null
	else
		printf '%s\n' "$ldif" | bash "$LDAP_TOOL" ldap ldapmodify >/dev/null
	fi
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
| directory | users | changes | change-to-visible p50 | p95 | max | operator idle CPU (${IDLE_SECONDS} s) | operator RSS idle | runs |
|---|---|---|---|---|---|---|---|---|
| $DIRECTORY | $N | $SAMPLES (displayName, disable, rename, add) | $p50 ms | $p95 ms | $max ms | ${idle_pct} % of one core | $rss_mb MB | $runs |
EOF
