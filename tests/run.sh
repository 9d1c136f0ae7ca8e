#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it:
#   installs what the real servers need (Debian packages, the SCIM server from PyPI; Go
#   modules for the control plane and the kstatus tool),
#   starts a real kube-apiserver (tests/cluster.sh), the directories, PostgreSQL and a SCIM
#   server, then runs formatting and lint checks and every Rust test, and stops what it
#   started.
#
#   bash tests/run.sh [extra cargo test arguments]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"
cd "$repo"

# Test services get their own state directory, so a developer's `tests/dev.sh`
# session keeps running beside a test run.
export USERSYNC_STATE=${USERSYNC_TEST_STATE:-/tmp/usersync-test}
export USERSYNC_SLAPD_PORT=${USERSYNC_TEST_SLAPD_PORT:-13389}
export USERSYNC_SLAPD_LDAPS_PORT=${USERSYNC_TEST_SLAPD_LDAPS_PORT:-13636}
export USERSYNC_AD_ADDR=${USERSYNC_TEST_AD_ADDR:-127.0.0.3}
export USERSYNC_POSTGRES_PORT=${USERSYNC_TEST_POSTGRES_PORT:-25432}
export USERSYNC_SCIM_PORT=${USERSYNC_TEST_SCIM_PORT:-28080}
started=()
cleanup() {
	local status=$?
	for ((i = ${#started[@]} - 1; i >= 0; i--)); do
		bash "$here/${started[i]}.sh" down >/dev/null 2>&1 || true
	done
	exit "$status"
}
trap cleanup EXIT

step() { printf '\n=== %s (%ss)\n' "$*" "$SECONDS" >&2; }

step "installing test dependencies"
command -v cargo >/dev/null || usersync_die "cargo is required (Rust toolchain)"
bash "$here/lib/deps.sh"

step "building the control plane (cached)"
bash "$here/cluster.sh" build >/dev/null

step "building kstatus (cached)"
USERSYNC_KSTATUS=$(bash "$here/kstatus.sh" build)
export USERSYNC_KSTATUS

step "starting the control plane"
# Every run starts from an empty cluster: the namespaces an earlier run deleted
# (their operators long gone) would keep the namespace controller busy for this one.
bash "$here/cluster.sh" down >/dev/null 2>&1 || true
rm -rf -- "$USERSYNC_STATE/cluster/etcd" "$USERSYNC_STATE/cluster/controlplane.log"
started+=(cluster)
eval "$(bash "$here/cluster.sh" up)"

step "starting the directories"
started+=(slapd)
bash "$here/slapd.sh" up >/dev/null
started+=(samba)
bash "$here/samba.sh" up >/dev/null

step "starting PostgreSQL"
started+=(postgres)
bash "$here/postgres.sh" up >/dev/null
eval "$(bash "$here/postgres.sh" env)"

step "starting the SCIM server"
started+=(scim)
bash "$here/scim.sh" up >/dev/null
eval "$(bash "$here/scim.sh" env)"

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "tests"
cargo test --all-targets --locked --no-fail-fast "$@"

step "done"
