#!/usr/bin/env bash
# Brings up everything usersync needs on this machine and runs the operator against it:
#   a real kube-apiserver (tests/cluster.sh), an OpenLDAP directory seeded with about a
#   thousand users (tests/slapd.sh), the CRDs and examples/, then `usersync run` in the
#   foreground. Ctrl-C stops the operator; the servers keep running for the next try
#   (`bash tests/dev.sh down` stops them).
#
#   bash tests/dev.sh [down]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"
cd "$repo"

if [[ ${1:-} == down ]]; then
	bash "$here/slapd.sh" down || true
	bash "$here/cluster.sh" down
	exit 0
fi

command -v cargo >/dev/null || usersync_die "cargo is required (Rust toolchain)"
bash "$here/lib/deps.sh" slapd

eval "$(bash "$here/cluster.sh" up)"
slapd_dir="$(usersync_state_dir)/slapd"
if [[ ! -e $slapd_dir/seeded ]]; then
	bash "$here/slapd.sh" seed 1000 >&2
	touch "$slapd_dir/seeded"
fi
bash "$here/slapd.sh" up >/dev/null
eval "$(bash "$here/slapd.sh" env)"

ns=${USERSYNC_NAMESPACE:-usersync-demo}
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd -l app.kubernetes.io/part-of=usersync >/dev/null
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" create secret generic openldap-bind --from-file=password="$USERSYNC_SLAPD_BIND_PASSWORD_FILE" \
	--dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" create secret generic openldap-ca --from-file=ca.crt="$USERSYNC_SLAPD_CA" \
	--dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" apply -k examples/ >/dev/null

cat >&2 <<MSG

usersync is starting against namespace $ns. In another terminal:
  export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$(command -v kubectl)"):\$PATH
  kubectl -n $ns get conn,spol,dmap
  kubectl -n $ns get duser
Ctrl-C stops the operator; \`bash tests/dev.sh down\` stops the servers.

MSG
cargo build --release --quiet
exec "$repo/target/release/usersync" run --namespace "$ns"
