#!/usr/bin/env bash
# Installs what the test suite's real servers need: Debian packages, and the
# SCIM server (scim2-server from PyPI) in a virtual environment.
#
#   tests/lib/deps.sh [all|slapd|samba|postgres|scim]...     (default: all)
#
# Idempotent and quiet when everything is present. When a package is missing it
# runs `apt-get update` once and installs with --no-install-recommends. Debian's
# maintainer scripts would start slapd, samba and postgres as system daemons
# (taking ports 389, 445, 5432 ...); a policy-rc.d that exits 101 stops that
# during the install, and afterwards the services are disabled at boot and any
# daemon the install did start is stopped. The tests run their own private
# instances (tests/slapd.sh, tests/samba.sh) and never use the system ones.
# The SCIM server's virtual environment lives in the cache outside the checkout
# (usersync_scim_venv in common.sh), keyed by the exact pins of
# tests/lib/scim-requirements.txt; an interrupted install is made again.
set -euo pipefail

lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$lib/common.sh"

log() { printf 'deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pkgs_slapd=(slapd ldap-utils openssl python3 iproute2 procps)
# samba-ad-provision holds the provisioning templates and is only a Recommends
# of samba-ad-dc, so it is named explicitly; ldb-tools gives ldbsearch for
# looking into sam.ldb directly.
pkgs_samba=(samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules
	winbind python3-samba ldb-tools ldap-utils openssl iproute2 procps)
pkgs_postgres=(postgresql postgresql-client)
# The SCIM server runs in a virtual environment of python3.
pkgs_scim=(python3 python3-venv curl)

# System services these packages register, stopped and disabled after an install.
services=(slapd samba-ad-dc samba smbd nmbd winbind postgresql)
daemons=(slapd samba smbd nmbd winbindd postgres)

want=()
scim=false
[[ $# -eq 0 ]] && set -- all
for group in "$@"; do
	case "$group" in
	all)
		want+=("${pkgs_slapd[@]}" "${pkgs_samba[@]}" "${pkgs_postgres[@]}" "${pkgs_scim[@]}")
		scim=true
		;;
	slapd | ldap | openldap) want+=("${pkgs_slapd[@]}") ;;
	samba | ad) want+=("${pkgs_samba[@]}") ;;
	postgres | postgresql) want+=("${pkgs_postgres[@]}") ;;
	scim)
		want+=("${pkgs_scim[@]}")
		scim=true
		;;
	-h | --help)
		sed -n '2,16p' "$0"
		exit 0
		;;
	*) die "unknown package group '$group' (all, slapd, samba, postgres, scim)" ;;
	esac
done

missing=()
for p in "${want[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	if [[ "$status" != ii* ]]; then
		[[ " ${missing[*]-} " == *" $p "* ]] || missing+=("$p")
	fi
done
# install_scim: the virtual environment with the pinned SCIM server. A venv
# cannot be moved once made (its scripts name their directory), so it is made
# in place under a lock and counts only once its stamp is written.
install_scim() {
	local venv
	venv=$(usersync_scim_venv)
	[[ -e $venv/.complete ]] && return 0
	mkdir -p "$(dirname "$venv")"
	(
		flock 9
		[[ -e $venv/.complete ]] && exit 0
		log "installing the SCIM server ($(grep -m1 '^scim2-server==' "$lib/scim-requirements.txt")) into $venv"
		rm -rf "$venv"
		python3 -m venv "$venv" || die "python3 -m venv failed (is python3-venv installed?)"
		"$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
			-r "$lib/scim-requirements.txt" >"$venv/pip.log" 2>&1 || {
			tail -n 20 "$venv/pip.log" >&2
			die "pip could not install tests/lib/scim-requirements.txt (full log: $venv/pip.log)"
		}
		"$venv/bin/scim2-server" --help >/dev/null || die "scim2-server does not start from $venv"
		touch "$venv/.complete"
	) 9>"$venv.lock"
}

if [[ ${#missing[@]} -eq 0 ]]; then
	if $scim; then install_scim; fi
	exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null || die "missing packages (${missing[*]}) and not root; no sudo either"
	SUDO=(sudo)
fi

started=$SECONDS
log "installing: ${missing[*]}"

# Keep maintainer scripts from starting daemons. Leave an existing policy-rc.d
# (Docker-style images ship one) alone.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\n# written by usersync tests/lib/deps.sh for the duration of an install\nexit 101\n' |
		"${SUDO[@]}" tee "$policy" >/dev/null
	"${SUDO[@]}" chmod 755 "$policy"
	own_policy=true
fi
cleanup() { if $own_policy; then "${SUDO[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

# Daemons running before the install are not ours to stop.
before=" "
for d in "${daemons[@]}"; do before+="$(pgrep -x "$d" | tr '\n' ' ' || true)"; done

# slapd's postinst would otherwise build a default database in /etc/ldap.
if [[ " ${missing[*]} " == *" slapd "* ]]; then
	echo 'slapd slapd/no_configuration boolean true' | "${SUDO[@]}" debconf-set-selections
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
"${SUDO[@]}" apt-get "${apt_opts[@]}" update >/dev/null ||
	die "apt-get update failed"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/tmp/usersync-deps-apt.log 2>&1 ||
	{
		tail -n 30 /tmp/usersync-deps-apt.log >&2
		die "apt-get install failed (full log: /tmp/usersync-deps-apt.log)"
	}

# Disable the system services at boot, and stop any daemon the install started.
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
	for s in "${services[@]}"; do
		if systemctl list-unit-files "$s.service" >/dev/null 2>&1 &&
			systemctl cat "$s.service" >/dev/null 2>&1; then
			"${SUDO[@]}" systemctl disable --now "$s.service" >/dev/null 2>&1 || true
		fi
	done
elif command -v update-rc.d >/dev/null; then
	for s in "${services[@]}"; do
		if [[ -x /etc/init.d/$s ]]; then
			"${SUDO[@]}" update-rc.d "$s" disable >/dev/null 2>&1 || true
		fi
	done
fi
for d in "${daemons[@]}"; do
	for pid in $(pgrep -x "$d" || true); do
		[[ "$before" == *" $pid "* ]] && continue
		# Only the top process: a postmaster or samba parent takes its children down.
		parent=$(ps -o comm= -p "$(ps -o ppid= -p "$pid" | tr -d ' ')" 2>/dev/null || true)
		[[ " ${daemons[*]} " == *" $parent "* ]] && continue
		log "stopping $d (pid $pid) started by the package install"
		"${SUDO[@]}" kill "$pid" 2>/dev/null || true
	done
done

if $scim; then install_scim; fi
log "done in $((SECONDS - started))s"
