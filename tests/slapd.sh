#!/usr/bin/env bash
# A private OpenLDAP server for usersync's tests, with its own cn=config.
#
#   tests/slapd.sh up [DIR]          create (first time) and start; reuse a running one
#   tests/slapd.sh down [DIR]        stop it (data is kept)
#   tests/slapd.sh restart [DIR]     down + up, data kept: simulates an outage
#   tests/slapd.sh status [DIR]      exit 0 when running
#   tests/slapd.sh env [DIR]         print `export USERSYNC_SLAPD_*=...` (eval it)
#   tests/slapd.sh seed [N] [DIR]    replace the directory's content with N generated
#                                    staff users (default 1000) + 10 contractors + groups
#   tests/slapd.sh ldif [N]          print the generated LDIF for ldapadd (no server needed)
#   tests/slapd.sh ldap CMD [ARG...] run ldapsearch/ldapmodify/ldapadd/ldapdelete/... as
#                                    the rootdn over plain LDAP (for tests that change users)
#   tests/slapd.sh limits [VALUE]    show, or set, olcSizeLimit of the data database
#   tests/slapd.sh destroy [DIR]     stop and delete the state directory
#
# DIR defaults to $USERSYNC_SLAPD_DIR, else "$(usersync_state_dir)/slapd"
# ($USERSYNC_STATE or /tmp/usersync-dev). Ports: $USERSYNC_SLAPD_PORT (3389, ldap:// with
# StartTLS) and $USERSYNC_SLAPD_LDAPS_PORT (3636), on 127.0.0.1 only; the ports in use
# are recorded at `up` so `env` reports the right ones.
#
# The directory: suffix dc=example,dc=org; rootdn cn=admin,dc=example,dc=org;
# service account cn=usersync,ou=Service,dc=example,dc=org with read access to the
# whole tree (other binds see only themselves; anonymous sees only the root DSE).
# Passwords are generated at creation and kept in admin.pw / usersync.pw (mode 600, no
# trailing newline, as `ldapsearch -y` reads the whole file). TLS: a CA made here,
# DIR/ca.crt; the server cert names 127.0.0.1, localhost and this host's name
# (libldap checks ldap://localhost against the host name).
# Overlays on the data database: memberof (groupOfNames/member -> memberOf),
# ppolicy (pwdAccountLockedTime: 000001010000Z marks a disabled user), syncprov
# (syncrepl refreshOnly / contextCSN for incremental reads).
#
# Size limits (olcSizeLimit of the data database), as for AD's MaxPageSize: a
# search without paging returns at most 1000 entries (size.soft/hard=1000; more
# gives sizeLimitExceeded, result 4), while a paged search of any page size may
# read everything (size.pr=unlimited size.prtotal=unlimited). The rootdn is never
# limited. A test changes the limits at run time, e.g.
#   tests/slapd.sh limits 'size.soft=50 size.hard=50 size.pr=100 size.prtotal=200'
# (a page size over size.pr then fails with adminLimitExceeded, 11, "illegal
# pagedResults page size"; a paged search past size.prtotal ends with result 4),
# and puts them back with `tests/slapd.sh limits default`.
#
# `seed` loads with slapadd (offline; 100k users in well under a minute): a running
# server is stopped for the load and started again. Generated entries carry a
# deterministic entryUUID, so the same N gives the same users and anchors. To add
# users to a running server the way a directory change would, use
# `tests/slapd.sh ldif N | tests/slapd.sh ldap ldapadd` or your own LDIF.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"

SUFFIX="dc=example,dc=org"
ADMIN_DN="cn=admin,$SUFFIX"
SVC_DN="cn=usersync,ou=Service,$SUFFIX"
DEFAULT_LIMITS="size.soft=1000 size.hard=1000 size.pr=unlimited size.prtotal=unlimited"
MODULE_DIR=/usr/lib/ldap
SCHEMA_DIR=/etc/ldap/schema

set_dir() {
	DIR=${1:-${USERSYNC_SLAPD_DIR:-$(usersync_state_dir)/slapd}}
	case $DIR in /*) ;; *) DIR="$PWD/$DIR" ;; esac
	PIDFILE="$DIR/slapd.pid"
	# A path in an ldapi:// URL is percent-encoded.
	LDAPI="ldapi://$(printf '%s' "$DIR/ldapi" | sed 's|%|%25|g; s|/|%2F|g')"
}

need_tools() {
	local t missing=()
	PATH="$PATH:/usr/sbin"
	for t in slapd slapadd slapcat slappasswd ldapwhoami ldapsearch ldapmodify openssl python3; do
		command -v "$t" >/dev/null || missing+=("$t")
	done
	[[ ${#missing[@]} -eq 0 ]] ||
		usersync_die "missing ${missing[*]}: run tests/lib/deps.sh slapd"
}

ports() {
	if [[ -s $DIR/ports ]] && running; then
		# shellcheck disable=SC1091
		source "$DIR/ports"
	else
		PORT=${USERSYNC_SLAPD_PORT:-3389}
		LDAPS_PORT=${USERSYNC_SLAPD_LDAPS_PORT:-3636}
	fi
	URL="ldap://127.0.0.1:$PORT"
	LDAPS_URL="ldaps://127.0.0.1:$LDAPS_PORT"
}

running() { pid_alive "$PIDFILE" "$DIR/slapd.d"; }

# Password files hold the bare secret: no newline, mode 600.
new_secret() {
	(
		umask 077
		openssl rand -hex 16 | tr -d '\n' >"$1"
	)
}

make_tls() {
	usersync_make_tls "$DIR/ca.crt" "$DIR/tls" slapd
}

config_ldif() {
	local rootpw=$1
	cat <<EOF
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: $DIR/slapd.pid
olcArgsFile: $DIR/slapd.args
olcLogLevel: none
olcTLSCACertificateFile: $DIR/ca.crt
olcTLSCertificateFile: $DIR/tls/server.crt
olcTLSCertificateKeyFile: $DIR/tls/server.key
olcTLSVerifyClient: never

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: $MODULE_DIR
olcModuleLoad: back_mdb
olcModuleLoad: memberof
olcModuleLoad: ppolicy
olcModuleLoad: syncprov

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file://$SCHEMA_DIR/core.ldif

include: file://$SCHEMA_DIR/cosine.ldif

include: file://$SCHEMA_DIR/inetorgperson.ldif

include: file://$SCHEMA_DIR/nis.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcAccess: {0}to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage by * break
olcAccess: {1}to dn.base="" by * read
olcAccess: {2}to dn.base="cn=Subschema" by * read

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: $SUFFIX
olcRootDN: $ADMIN_DN
olcRootPW: $rootpw
olcDbDirectory: $DIR/data
olcDbMaxSize: 8589934592
olcDbIndex: objectClass eq
olcDbIndex: uid,cn,mail eq,sub
olcDbIndex: member,memberOf eq
olcDbIndex: entryUUID,entryCSN eq
olcDbIndex: employeeType,departmentNumber eq
olcSizeLimit: $DEFAULT_LIMITS
olcAccess: {0}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {1}to * by dn.exact="$SVC_DN" read by self read by * none

dn: olcOverlay={0}memberof,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {0}memberof
olcMemberOfDangling: ignore
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf

dn: olcOverlay={1}ppolicy,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {1}ppolicy

dn: olcOverlay={2}syncprov,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {2}syncprov
olcSpCheckpoint: 100 10
olcSpSessionlog: 10000
EOF
}

base_ldif() {
	local svcpw=$1
	cat <<EOF
dn: $SUFFIX
objectClass: dcObject
objectClass: organization
dc: example
o: Example Org

dn: ou=Service,$SUFFIX
objectClass: organizationalUnit
ou: Service

dn: $SVC_DN
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: usersync
description: usersync's read-only bind account
userPassword: $svcpw

dn: ou=Staff,$SUFFIX
objectClass: organizationalUnit
ou: Staff

dn: ou=Contractors,$SUFFIX
objectClass: organizationalUnit
ou: Contractors

dn: ou=Groups,$SUFFIX
objectClass: organizationalUnit
ou: Groups

EOF
}

# Offline: a fresh data database holding the base entries plus whatever is on stdin.
load_data() {
	rm -rf "$DIR/data"
	mkdir -p "$DIR/data"
	chmod 700 "$DIR/data"
	local svcpw
	svcpw=$(slappasswd -T "$DIR/usersync.pw")
	{
		base_ldif "$svcpw"
		cat
	} | slapadd -q -w -n1 -F "$DIR/slapd.d" 2>"$DIR/slapadd.log" ||
		usersync_die "slapadd failed: $(tail -n 5 "$DIR/slapadd.log")"
}

init() {
	[[ -f $DIR/created ]] && return 0
	local t0=$SECONDS
	usersync_log "creating a new OpenLDAP instance in $DIR"
	rm -rf "$DIR/slapd.d" "$DIR/data" "$DIR/tls"
	mkdir -p "$DIR/slapd.d" "$DIR/data"
	chmod 700 "$DIR"
	[[ -s $DIR/admin.pw ]] || new_secret "$DIR/admin.pw"
	[[ -s $DIR/usersync.pw ]] || new_secret "$DIR/usersync.pw"
	make_tls
	(umask 077; config_ldif "$(slappasswd -T "$DIR/admin.pw")" >"$DIR/config.ldif")
	slapadd -n0 -F "$DIR/slapd.d" -l "$DIR/config.ldif" >"$DIR/slapadd.log" 2>&1 ||
		usersync_die "slapadd of cn=config failed: $(tail -n 5 "$DIR/slapadd.log")"
	load_data </dev/null
	date -u +%FT%TZ >"$DIR/created"
	usersync_log "created in $((SECONDS - t0))s"
}

# Like wait_for, but polls every 50ms for the first second: a restart in a
# test should not cost a whole half-second poll.
ready_within() {
	local timeout=$1 i
	shift
	for ((i = 0; i < 20; i++)); do
		"$@" && return 0
		sleep 0.05
	done
	wait_for "$timeout" "$@"
}

port_free() {
	! ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

svc_bind_works() {
	# Only "is the process there": its command line is in flux while it starts.
	if ! kill -0 "$(<"$PIDFILE")" 2>/dev/null; then
		usersync_die "slapd exited during start-up; see $DIR/slapd.log: $(tail -n 5 "$DIR/slapd.log")"
	fi
	LDAPTLS_CACERT="$DIR/ca.crt" ldapwhoami -x -H "$URL" -D "$SVC_DN" -y "$DIR/usersync.pw" >/dev/null 2>&1
}

up() {
	need_tools
	init
	ports
	if running; then
		return 0
	fi
	port_free "$PORT" || usersync_die "port $PORT is in use (set USERSYNC_SLAPD_PORT)"
	port_free "$LDAPS_PORT" || usersync_die "port $LDAPS_PORT is in use (set USERSYNC_SLAPD_LDAPS_PORT)"
	printf 'PORT=%s\nLDAPS_PORT=%s\n' "$PORT" "$LDAPS_PORT" >"$DIR/ports"
	rm -f "$PIDFILE" "$DIR/ldapi"
	# -d keeps slapd in the foreground (so $! is slapd itself) and sends its
	# messages to slapd.log; USERSYNC_SLAPD_DEBUG=stats (or -1) makes them useful.
	local urls="$URL/ $LDAPS_URL/ $LDAPI/"
	# A unix socket path is limited to 107 bytes; without ldapi only `limits` is lost.
	if ((${#DIR} > 100)); then
		urls="$URL/ $LDAPS_URL/"
		usersync_log "state dir path too long for an ldapi socket; '$0 limits' will not work"
	fi
	setsid slapd -d "${USERSYNC_SLAPD_DEBUG:-0}" -F "$DIR/slapd.d" \
		-h "$urls" </dev/null >>"$DIR/slapd.log" 2>&1 &
	echo $! >"$PIDFILE"
	local t0
	t0=$(date +%s%N)
	ready_within 30 svc_bind_works ||
		usersync_die "slapd did not answer within 30s; see $DIR/slapd.log"
	usersync_log "slapd up (pid $(<"$PIDFILE")) on $URL and $LDAPS_URL in $((($(date +%s%N) - t0) / 1000000))ms"
}

down() {
	if running; then
		stop_pid "$PIDFILE" "$DIR/slapd.d" 30
		usersync_log "slapd stopped"
	else
		rm -f "$PIDFILE"
	fi
}

print_env() {
	[[ -f $DIR/created ]] || usersync_die "no instance in $DIR: run '$0 up' first"
	ports
	cat <<EOF
export USERSYNC_SLAPD_URL=$URL
export USERSYNC_SLAPD_LDAPS_URL=$LDAPS_URL
export USERSYNC_SLAPD_BASE_DN=$SUFFIX
export USERSYNC_SLAPD_BIND_DN=$SVC_DN
export USERSYNC_SLAPD_BIND_PASSWORD_FILE=$DIR/usersync.pw
export USERSYNC_SLAPD_CA=$DIR/ca.crt
export USERSYNC_SLAPD_ADMIN_DN=$ADMIN_DN
export USERSYNC_SLAPD_ADMIN_PASSWORD_FILE=$DIR/admin.pw
export USERSYNC_SLAPD_LDAPI_URL=$LDAPI
EOF
}

seed() {
	local n=$1
	[[ $n =~ ^[0-9]+$ ]] || usersync_die "seed: N must be a number, got '$n'"
	need_tools
	init
	local was_running=false t0=$SECONDS
	if running; then
		was_running=true
		down
	fi
	python3 "$here/lib/gen_users_ldif.py" --users "$n" --base "$SUFFIX" --offline | load_data
	usersync_log "seeded $n staff users in $((SECONDS - t0))s"
	if $was_running; then up; fi
}

ldap_as_admin() {
	[[ $# -ge 1 ]] || usersync_die "usage: $0 ldap ldapsearch|ldapmodify|ldapadd|ldapdelete|ldapmodrdn|ldappasswd|ldapwhoami [ARG...]"
	local cmd=$1
	shift
	case $cmd in
	ldapsearch | ldapmodify | ldapadd | ldapdelete | ldapmodrdn | ldappasswd | ldapwhoami | ldapcompare | ldapexop) ;;
	*) usersync_die "ldap: '$cmd' is not an ldap-utils client" ;;
	esac
	running || usersync_die "slapd is not running in $DIR: run '$0 up'"
	ports
	LDAPTLS_CACERT="$DIR/ca.crt" exec "$cmd" -x -H "$URL" -D "$ADMIN_DN" -y "$DIR/admin.pw" "$@"
}

limits() {
	running || usersync_die "slapd is not running in $DIR: run '$0 up'"
	if [[ $# -eq 0 ]]; then
		ldapsearch -LLL -Q -o ldif_wrap=no -Y EXTERNAL -H "$LDAPI" -b 'olcDatabase={1}mdb,cn=config' -s base olcSizeLimit |
			sed -n 's/^olcSizeLimit: //p'
		return
	fi
	local value=$*
	[[ $value == default ]] && value=$DEFAULT_LIMITS
	printf 'dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcSizeLimit\nolcSizeLimit: %s\n' "$value" |
		ldapmodify -Q -Y EXTERNAL -H "$LDAPI" >/dev/null
	usersync_log "olcSizeLimit: $value"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
up) set_dir "${1:-}" && up ;;
down) set_dir "${1:-}" && down ;;
restart) set_dir "${1:-}" && down && up ;;
status)
	set_dir "${1:-}"
	if running; then echo "running (pid $(<"$PIDFILE"))"; else
		echo "stopped"
		exit 1
	fi
	;;
env) set_dir "${1:-}" && print_env ;;
seed)
	n=1000
	if [[ ${1:-} =~ ^[0-9]+$ ]]; then
		n=$1
		shift
	fi
	set_dir "${1:-}"
	seed "$n"
	;;
ldif)
	python3 "$here/lib/gen_users_ldif.py" --users "${1:-1000}" --base "$SUFFIX"
	;;
ldap) set_dir "" && ldap_as_admin "$@" ;;
limits) set_dir "" && need_tools && limits "$@" ;;
destroy)
	set_dir "${1:-}"
	down
	rm -rf "$DIR"
	;;
*)
	sed -n '2,14p' "$0" >&2
	exit 2
	;;
esac
