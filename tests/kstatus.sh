#!/usr/bin/env bash
# kstatus, the health verdict kpt, cli-utils and Flux compute for an object
# (sigs.k8s.io/cli-utils/pkg/kstatus/status), as a command for the tests
# (see tests/kstatus/README.md).
#
#   tests/kstatus.sh build       build it into the cache if needed; print its path
#   tests/kstatus.sh path        print its path (fails if it is not built)
#
# The binary is cached in ${USERSYNC_CACHE:-${XDG_CACHE_HOME:-~/.cache}/usersync}/kstatus/<key>/bin,
# <key> being a hash of tests/kstatus's go.mod, go.sum and sources, and is
# built the way tests/cluster.sh builds the control plane (the same Go module
# cache and settings). tests/run.sh exports its path as USERSYNC_KSTATUS.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"
module="$here/kstatus"

# Bump when the build recipe below changes in a way the sources don't show.
recipe=1

binary() {
	printf '%s/kstatus/%s/bin/kstatus\n' "$(usersync_cache_dir)" "$(usersync_go_key "$module" "$recipe")"
}

# build_into DIR: build the tool into DIR/bin.
build_into() {
	local out=$1
	(cd "$module" && usersync_go_env && go build -trimpath -ldflags "-s -w" -o "$out/bin/kstatus" .)
}

cmd_build() {
	local bin
	bin=$(binary)
	if [[ ! -x $bin ]]; then
		usersync_log "building kstatus into $(dirname "$(dirname "$bin")") (first time: a few minutes)"
		usersync_cached_build "$(dirname "$(dirname "$bin")")" build_into
		[[ -x $bin ]] || usersync_die "the build left no $bin"
	fi
	printf '%s\n' "$bin"
}

cmd_path() {
	local bin
	bin=$(binary)
	[[ -x $bin ]] || usersync_die "kstatus is not built: run tests/kstatus.sh build"
	printf '%s\n' "$bin"
}

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
	exit 2
}

case "${1:-}" in
build) cmd_build ;;
path) cmd_path ;;
*) usage ;;
esac
