#!/usr/bin/env bash
# A private Samba Active Directory domain controller for usersync's tests.
#
#   tests/samba.sh up [DIR]          create (from a cached template) and start; reuse a running one
#   tests/samba.sh down [DIR]        stop it (data is kept)
#   tests/samba.sh restart [DIR]     down + up, data kept: simulates an outage
#   tests/samba.sh status [DIR]      exit 0 when running
#   tests/samba.sh env [DIR]         print `export USERSYNC_AD_*=...` (eval it)
#   tests/samba.sh seed [N] [DIR]    replace OU=Staff and OU=Groups with N generated users
#                                    (default 100) and groups, nested ones included
#   tests/samba.sh tool ARG...       samba-tool against this DC, e.g.
#                                      tool user create alice --random-password --userou=OU=Staff
#                                      tool user disable alice
#                                      tool group add GroupA --groupou=OU=Groups
#                                      tool group addmembers GroupB GroupA      (A nested in B)
#                                      tool user show alice --attributes=objectGUID
#   tests/samba.sh ldap CMD [ARG...] run ldapsearch/ldapmodify/... bound as Administrator
#   tests/samba.sh destroy [DIR]     stop and delete the state directory
#
# DIR defaults to $USERSYNC_AD_DIR, else "$(usersync_state_dir)/samba". The DC
# listens on $USERSYNC_AD_ADDR (default 127.0.0.2, a loopback address: Linux routes
# all of 127/8 to lo, so nothing is added to the host) on the fixed AD ports 389
# (LDAP, StartTLS), 636 (LDAPS), 3268/3269 (global catalog); Samba has no setting
# to move them, which is why the address is not 127.0.0.1. Only the LDAP server
# runs (server services = ldap): no DNS, KDC, SMB or NetBIOS, so no other port.
#
# Domain: realm CORP.EXAMPLE, NetBIOS CORP, base DN DC=corp,DC=example, host dc1.
# Simple binds over plain LDAP are allowed (ldap server require strong auth = no).
# Bind account: CN=svc-usersync,OU=Service,DC=corp,DC=example, an ordinary domain
# user (AD lets authenticated users read users and groups). Passwords are generated
# and kept in usersync.pw / admin.pw (mode 600, no trailing newline); no password
# expires. TLS: a CA made here, DIR/ca.crt; the DC's certificate names the address,
# dc1.corp.example, corp.example and localhost.
#
# Provisioning (samba-tool domain provision, ~7s) happens once per template key
# (Samba version, address, these scripts) into "$(usersync_cache_dir)/samba-template-KEY";
# `up` of a new DIR copies it (<1s). Every copy has the same domain SID, GUIDs and
# passwords. USERSYNC_AD_PROCESS_MODEL: single (default, one process, ~55 MB) or
# prefork (Samba's default: 4 LDAP workers).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"

REALM=CORP.EXAMPLE
DOMAIN=CORP
HOST=dc1
BASE_DN="DC=corp,DC=example"
SVC_DN="CN=svc-usersync,OU=Service,$BASE_DN"
ADMIN_DN="CN=Administrator,CN=Users,$BASE_DN"
ADDR=${USERSYNC_AD_ADDR:-127.0.0.2}
SAMBA_PY=/usr/bin/python3 # Debian's python, where the samba bindings are

set_dir() {
	DIR=${1:-${USERSYNC_AD_DIR:-$(usersync_state_dir)/samba}}
	case $DIR in /*) ;; *) DIR="$PWD/$DIR" ;; esac
	PIDFILE="$DIR/samba.pid"
	CONF="$DIR/etc/smb.conf"
}

need_tools() {
	local t missing=()
	PATH="$PATH:/usr/sbin"
	for t in samba samba-tool ldapwhoami ldapsearch openssl ss; do
		command -v "$t" >/dev/null || missing+=("$t")
	done
	[[ -x $SAMBA_PY ]] && "$SAMBA_PY" -c 'import samba.samdb' 2>/dev/null || missing+=(python3-samba)
	[[ -d /usr/share/samba/setup ]] || missing+=(samba-ad-provision)
	[[ ${#missing[@]} -eq 0 ]] ||
		usersync_die "missing ${missing[*]}: run tests/lib/deps.sh samba"
	[[ $ADDR =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
		usersync_die "USERSYNC_AD_ADDR must be a loopback address (127.x.y.z), got '$ADDR'"
}

# Samba rewrites its command line ("samba: root process"), so the check can only
# ask for "samba" there; the pid file is per DIR.
running() { pid_alive "$PIDFILE" samba; }

new_secret() {
	# Meets AD's complexity rule (three of: upper, lower, digit, symbol).
	(
		umask 077
		printf 'Us-%s-Zz9' "$(openssl rand -hex 12)" >"$1"
	)
}

# smb.conf for a DC whose files are all under @DIR@ (filled in by render_conf).
conf_template() {
	cat <<EOF
# Written by usersync tests/samba.sh: a private test DC, LDAP only.
[global]
	netbios name = ${HOST^^}
	realm = $REALM
	workgroup = $DOMAIN
	server role = active directory domain controller
	server services = ldap
	interfaces = $ADDR/8
	bind interfaces only = yes
	ldap server require strong auth = no
	tls enabled = yes
	tls keyfile = @DIR@/tls/server.key
	tls certfile = @DIR@/tls/server.crt
	tls cafile = @DIR@/ca.crt
	private dir = @DIR@/private
	binddns dir = @DIR@/bind-dns
	lock directory = @DIR@
	state directory = @DIR@/state
	cache directory = @DIR@/cache
	pid directory = @DIR@/run
	ncalrpc dir = @DIR@/run/ncalrpc
	winbindd socket directory = @DIR@/run/winbindd
	ntp signd socket directory = @DIR@/run/ntp_signd
	logging = file
	log file = @DIR@/log/%m.log
	idmap_ldb:use rfc2307 = yes

[sysvol]
	path = @DIR@/state/sysvol
	read only = No

[netlogon]
	path = @DIR@/state/sysvol/${REALM,,}/scripts
	read only = No
EOF
}

render_conf() {
	local target=$1 text
	text=$(<"$target/etc/smb.conf.in")
	printf '%s\n' "${text//@DIR@/$target}" >"$target/etc/smb.conf"
	mkdir -p "$target/run" "$target/log" "$target/cache"
}

make_tls() {
	usersync_make_tls "$1/ca.crt" "$1/tls" samba "$HOST.${REALM,,}" \
		"IP:$ADDR,DNS:$HOST.${REALM,,},DNS:${REALM,,},DNS:localhost"
}

template_key() {
	{
		samba -V
		echo "$ADDR"
		cat "${BASH_SOURCE[0]}" "$here/lib/common.sh" "$here/lib/samba_dir.py" "$here/lib/gen_users_ldif.py"
	} | sha256sum | cut -c1-16
}

# Provision a DC into the cache once; print its path.
ensure_template() {
	local cache key tpl tmp t0=$SECONDS
	cache=$(usersync_cache_dir)
	key=$(template_key)
	tpl="$cache/samba-template-$key"
	if [[ -f $tpl/created ]]; then
		printf '%s\n' "$tpl"
		return
	fi
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/samba-template-$key.tmp.XXXXXX")
	usersync_log "provisioning a Samba AD DC template (once per key $key)..."
	new_secret "$tmp/admin.pw"
	new_secret "$tmp/usersync.pw"
	make_tls "$tmp"
	# The provision's own random Administrator password is replaced from admin.pw
	# below, and its log is deleted on success, so no password stays in a log.
	if ! samba-tool domain provision --targetdir="$tmp" --realm="$REALM" --domain="$DOMAIN" \
		--host-name="$HOST" --server-role=dc --dns-backend=NONE --use-rfc2307 \
		--option="interfaces=$ADDR/8" --option="bind interfaces only=yes" \
		>"$tmp/provision.log" 2>&1; then
		grep -iv password "$tmp/provision.log" | tail -n 20 >&2
		rm -rf "$tmp"
		usersync_die "samba-tool domain provision failed"
	fi
	rm -f "$tmp/provision.log"
	conf_template >"$tmp/etc/smb.conf.in"
	render_conf "$tmp"
	"$SAMBA_PY" "$here/lib/samba_dir.py" "$tmp/etc/smb.conf" init "$tmp/usersync.pw" ||
		{
			rm -rf "$tmp"
			usersync_die "creating the service account failed"
		}
	set_admin_password "$tmp"
	date -u +%FT%TZ >"$tmp/created"
	rm -f "$tmp/etc/smb.conf"
	if ! mv -T "$tmp" "$tpl" 2>/dev/null; then
		rm -rf "$tmp" # another process made the same template meanwhile
	fi
	# Templates of older keys (an older Samba or older scripts) are dead weight.
	local old
	for old in "$cache"/samba-template-*/created; do
		old=${old%/created}
		[[ -d $old && $old != "$tpl" ]] && rm -rf "$old"
	done
	usersync_log "template ready in $((SECONDS - t0))s: $tpl"
	printf '%s\n' "$tpl"
}

set_admin_password() {
	"$SAMBA_PY" - "$1/etc/smb.conf" "$1/admin.pw" <<'EOF'
import sys
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB
lp = LoadParm()
lp.load(sys.argv[1])
db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
with open(sys.argv[2], encoding="utf-8") as f:
    db.setpassword("(sAMAccountName=Administrator)", f.read().strip())
EOF
}

create_dir() {
	[[ -f $DIR/created ]] && return 0
	local tpl
	tpl=$(ensure_template)
	rm -rf "$DIR"
	mkdir -p "$(dirname "$DIR")"
	cp -a "$tpl" "$DIR"
	render_conf "$DIR"
	date -u +%FT%TZ >"$DIR/created"
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
	local port=$1
	! ss -Htln "( sport = :$port )" 2>/dev/null |
		awk '{print $4}' | grep -qE "^($ADDR|0\.0\.0\.0|\*|\[::\]):$port\$"
}

svc_bind_works() {
	# Only "is the process there": its command line is in flux while it starts.
	if ! kill -0 "$(<"$PIDFILE")" 2>/dev/null; then
		usersync_die "samba exited during start-up; see $DIR/samba.log: $(tail -n 5 "$DIR/samba.log")"
	fi
	# (Samba has no WhoAmI extended operation: read the account itself instead.)
	ldapsearch -x -H "ldap://$ADDR" -D "$SVC_DN" -y "$DIR/usersync.pw" -b "$SVC_DN" -s base dn >/dev/null 2>&1
}

up() {
	need_tools
	create_dir
	if running; then
		return 0
	fi
	local p
	for p in 389 636 3268 3269; do
		port_free "$p" || usersync_die "port $ADDR:$p is taken (choose another USERSYNC_AD_ADDR, e.g. 127.0.0.3)"
	done
	rm -f "$PIDFILE" "$DIR/run/samba.pid"
	local t0
	t0=$(date +%s%N)
	setsid samba -i -M "${USERSYNC_AD_PROCESS_MODEL:-single}" -s "$CONF" \
		</dev/null >>"$DIR/samba.log" 2>&1 &
	echo $! >"$PIDFILE"
	ready_within 60 svc_bind_works ||
		usersync_die "samba did not answer within 60s; see $DIR/samba.log"
	usersync_log "samba AD DC up (pid $(<"$PIDFILE")) on ldap://$ADDR in $((($(date +%s%N) - t0) / 1000000))ms"
}

down() {
	if running; then
		stop_pid "$PIDFILE" samba 30
		usersync_log "samba stopped"
	else
		rm -f "$PIDFILE"
	fi
}

print_env() {
	[[ -f $DIR/created ]] || usersync_die "no DC in $DIR: run '$0 up' first"
	cat <<EOF
export USERSYNC_AD_URL=ldap://$ADDR:389
export USERSYNC_AD_LDAPS_URL=ldaps://$ADDR:636
export USERSYNC_AD_GC_URL=ldap://$ADDR:3268
export USERSYNC_AD_BASE_DN=$BASE_DN
export USERSYNC_AD_BIND_DN=$SVC_DN
export USERSYNC_AD_BIND_PASSWORD_FILE=$DIR/usersync.pw
export USERSYNC_AD_CA=$DIR/ca.crt
export USERSYNC_AD_ADMIN_DN=$ADMIN_DN
export USERSYNC_AD_ADMIN_PASSWORD_FILE=$DIR/admin.pw
export USERSYNC_AD_REALM=$REALM
export USERSYNC_AD_DOMAIN=$DOMAIN
export USERSYNC_AD_SMB_CONF=$CONF
EOF
}

need_dir() {
	[[ -f $DIR/created ]] || usersync_die "no DC in $DIR: run '$0 up' first"
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
	n=100
	if [[ ${1:-} =~ ^[0-9]+$ ]]; then
		n=$1
		shift
	fi
	set_dir "${1:-}"
	need_tools
	create_dir
	t0=$SECONDS
	"$SAMBA_PY" "$here/lib/samba_dir.py" "$CONF" seed "$n"
	usersync_log "seeded $n users in $((SECONDS - t0))s"
	;;
tool)
	set_dir ""
	need_dir
	exec samba-tool "$@" -s "$CONF"
	;;
ldap)
	set_dir ""
	need_dir
	[[ $# -ge 1 ]] || usersync_die "usage: $0 ldap ldapsearch|ldapmodify|ldapadd|ldapdelete|ldapmodrdn [ARG...]"
	case $1 in
	ldapsearch | ldapmodify | ldapadd | ldapdelete | ldapmodrdn | ldapwhoami | ldapcompare | ldapexop | ldappasswd) ;;
	*) usersync_die "ldap: '$1' is not an ldap-utils client" ;;
	esac
	c=$1
	shift
	LDAPTLS_CACERT="$DIR/ca.crt" exec "$c" -x -H "ldap://$ADDR" -D "$ADMIN_DN" -y "$DIR/admin.pw" "$@"
	;;
destroy)
	set_dir "${1:-}"
	down
	rm -rf "$DIR"
	;;
*)
	sed -n '2,18p' "$0" >&2
	exit 2
	;;
esac
