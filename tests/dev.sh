#!/usr/bin/env bash
# Brings up everything usersync needs on this machine and runs the operator against it:
#   a real kube-apiserver (tests/cluster.sh), an OpenLDAP directory seeded with about a
#   thousand users (tests/slapd.sh), the CRDs and examples/, then `usersync run` in the
#   foreground. Ctrl-C stops the operator; the servers keep running for the next try
#   (`bash tests/dev.sh down` stops them).
#
#   bash tests/dev.sh [down]
#
# USERSYNC_DEV_BIN=path runs that usersync binary instead of building the release one
# (the README's docs test runs the debug build the test suite already has).
#
# USERSYNC_STORE=postgres keeps the users in a private PostgreSQL server
# (tests/postgres.sh) instead of DirectoryUser objects; `usersync users --store postgres`
# lists them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"
cd "$repo"

store=${USERSYNC_STORE:-kubernetes}
case $store in kubernetes | postgres) ;; *) usersync_die "USERSYNC_STORE must be kubernetes or postgres" ;; esac

if [[ ${1:-} == down ]]; then
	bash "$here/postgres.sh" down || true
	bash "$here/slapd.sh" down || true
	bash "$here/cluster.sh" down
	exit 0
fi

command -v cargo >/dev/null || usersync_die "cargo is required (Rust toolchain)"
ns=${USERSYNC_NAMESPACE:-usersync-demo}
if [[ $store == postgres ]]; then
	bash "$here/lib/deps.sh" slapd postgres
else
	bash "$here/lib/deps.sh" slapd
fi

# The release build takes minutes on a fresh machine: it comes first, with cargo's own
# progress, so that nothing below waits in silence.
if [[ -n ${USERSYNC_DEV_BIN:-} ]]; then
	bin=$USERSYNC_DEV_BIN
else
	usersync_log "building usersync (release); a first build takes several minutes"
	cargo build --release
	bin="$repo/target/release/usersync"
fi

eval "$(bash "$here/cluster.sh" up)"
slapd_dir="$(usersync_state_dir)/slapd"
if [[ ! -e $slapd_dir/seeded ]]; then
	bash "$here/slapd.sh" seed 1000 >&2
	touch "$slapd_dir/seeded"
fi
bash "$here/slapd.sh" up >/dev/null
eval "$(bash "$here/slapd.sh" env)"
list_users="kubectl -n $ns get duser"
if [[ $store == postgres ]]; then
	bash "$here/postgres.sh" up >/dev/null
	eval "$(bash "$here/postgres.sh" env)"
	export USERSYNC_STORE=postgres
	list_users="eval \"\$(bash tests/postgres.sh env)\"; usersync users --store postgres -n $ns"
fi

kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd -l app.kubernetes.io/part-of=usersync >/dev/null
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" create secret generic openldap-bind --from-file=password="$USERSYNC_SLAPD_BIND_PASSWORD_FILE" \
	--dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" create secret generic openldap-ca --from-file=ca.crt="$USERSYNC_SLAPD_CA" \
	--dry-run=client -o yaml | kubectl apply -f - >/dev/null
# Only Secrets an admin marked as credentials (for these connectors) are used.
kubectl -n "$ns" label --overwrite secret openldap-bind openldap-ca usersync.dev/credential=true >/dev/null
kubectl -n "$ns" annotate --overwrite secret openldap-bind openldap-ca usersync.dev/connectors=openldap >/dev/null
# examples/ points at the default port; this directory may listen on another.
kubectl kustomize examples/ | sed "s#ldap://127.0.0.1:3389#$USERSYNC_SLAPD_URL#" |
	kubectl -n "$ns" apply -f - >/dev/null

cat >&2 <<MSG

usersync is starting against namespace $ns. In another terminal:
  export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$bin"):$(dirname "$(command -v kubectl)"):\$PATH
  kubectl -n $ns get conn,spol,dmap
  $list_users
Ctrl-C stops the operator; \`bash tests/dev.sh down\` stops the servers.

MSG
exec "$bin" run --namespace "$ns"
