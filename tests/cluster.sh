#!/usr/bin/env bash
# A local, real Kubernetes control plane for usersync's tests (see
# tests/controlplane/README.md).
#
#   tests/cluster.sh build       build testcluster, kubectl and helm into the cache
#   tests/cluster.sh bin         print the directory holding them (building if needed)
#   tests/cluster.sh up [DIR]    start (or reuse) a control plane; print export lines
#   tests/cluster.sh env [DIR]   print the export lines: eval "$(tests/cluster.sh env)"
#   tests/cluster.sh down [DIR]  stop it
#
# DIR defaults to ${USERSYNC_STATE:-/tmp/usersync-dev}/cluster; binaries are
# cached in ${USERSYNC_CACHE:-${XDG_CACHE_HOME:-~/.cache}/usersync}/controlplane/<key>/bin,
# <key> being a hash of the Go sources, so a change to them rebuilds.
# USERSYNC_APISERVER_PORT pins the apiserver port (default: a free one).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$here/lib/common.sh"
module="$here/controlplane"

# Bump when the build recipe below changes in a way the sources don't show.
recipe=1
ready_timeout=180

cache_key() {
	usersync_go_key "$module" "$recipe"
}

bin_dir() {
	printf '%s/controlplane/%s/bin\n' "$(usersync_cache_dir)" "$(cache_key)"
}

# Version strings for `kubectl version`, `helm version` and the apiserver's
# /version, taken from the pinned modules so they cannot drift.
ldflags() {
	local k8s k8s_time helm major minor
	read -r k8s k8s_time < <(go list -m -f '{{.Version}} {{with .Time}}{{.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)
	helm=$(go list -m -f '{{.Version}}' helm.sh/helm/v3)
	IFS=. read -r major minor _ <<<"${k8s#v}"
	local flags="-s -w" pkg
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$k8s_time"
	done
	flags+=" -X helm.sh/helm/v3/internal/version.version=$helm"
	flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	# The Kubernetes version helm assumes when not talking to a cluster.
	for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
		flags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
	done
	printf '%s\n' "$flags"
}

cmd_build() {
	local bin
	bin=$(bin_dir)
	if [[ -x $bin/testcluster && -x $bin/kubectl && -x $bin/helm ]]; then
		printf '%s\n' "$bin"
		return
	fi
	usersync_log "building the control plane, kubectl and helm into $(dirname "$bin") (first time: several minutes)"
	usersync_cached_build "$(dirname "$bin")" build_into
	[[ -x $bin/testcluster ]] || usersync_die "the build left no $bin/testcluster"
	printf '%s\n' "$bin"
}

# build_into DIR: build the three binaries into DIR/bin.
build_into() {
	local out=$1
	(
		cd "$module" && usersync_go_env && flags=$(ldflags) &&
			go build -trimpath -ldflags "$flags" -o "$out/bin/" ./cmd/testcluster ./cmd/kubectl &&
			go build -trimpath -ldflags "$flags" -o "$out/bin/helm" helm.sh/helm/v3/cmd/helm
	)
}

state_dir() {
	local dir=${1:-$(usersync_state_dir)/cluster}
	mkdir -p "$dir"
	(cd "$dir" && pwd)
}

print_env() {
	local dir=$1 bin=$2
	printf 'export KUBECONFIG=%q\n' "$dir/kubeconfig"
	# shellcheck disable=SC2016 # $PATH is expanded by whoever evals this
	printf 'export PATH=%q:"$PATH"\n' "$bin"
}

# Ready means: our process is alive, it has written the kubeconfig (which it
# does only after /readyz returned 200), and kubectl agrees.
cluster_ready() {
	local dir=$1 bin=$2
	# No command-line pattern here: right after the fork the child may not
	# have exec'd testcluster yet (the pid is ours either way).
	if ! pid_alive "$dir/pid"; then
		tail -n 30 "$dir/controlplane.log" >&2 2>/dev/null || true
		usersync_die "the control plane exited; log: $dir/controlplane.log"
	fi
	[[ -s $dir/kubeconfig ]] &&
		"$bin/kubectl" --kubeconfig "$dir/kubeconfig" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

cmd_up() {
	local dir bin
	dir=$(state_dir "${1:-}")
	bin=$(cmd_build)
	if pid_alive "$dir/pid" testcluster; then
		usersync_log "reusing the control plane running from $dir (pid $(<"$dir/pid"))"
	else
		rm -f "$dir/pid" "$dir/kubeconfig"
		usersync_log "starting the control plane in $dir"
		# setsid: the control plane outlives this script and ignores a Ctrl-C
		# meant for the terminal's foreground test run.
		# It logs to $dir/controlplane.log itself; the redirection only catches
		# what it might print before opening that file.
		setsid nohup "$bin/testcluster" --dir "$dir" --port "${USERSYNC_APISERVER_PORT:-0}" \
			>>"$dir/controlplane.log" 2>&1 </dev/null &
		echo $! >"$dir/pid"
	fi
	local start=$SECONDS
	wait_for "$ready_timeout" cluster_ready "$dir" "$bin" ||
		usersync_die "not ready after ${ready_timeout}s; log: $dir/controlplane.log"
	usersync_log "ready after $((SECONDS - start))s; KUBECONFIG=$dir/kubeconfig"
	print_env "$dir" "$bin"
}

cmd_down() {
	local dir
	dir=$(state_dir "${1:-}")
	if pid_alive "$dir/pid" testcluster; then
		usersync_log "stopping the control plane (pid $(<"$dir/pid"))"
	fi
	stop_pid "$dir/pid" testcluster 60
	rm -f "$dir/kubeconfig"
}

cmd_env() {
	local dir bin
	dir=$(state_dir "${1:-}")
	bin=$(cmd_build)
	print_env "$dir" "$bin"
}

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
	exit 2
}

case "${1:-}" in
build) cmd_build ;;
bin) cmd_build ;;
up) cmd_up "${2:-}" ;;
down) cmd_down "${2:-}" ;;
env) cmd_env "${2:-}" ;;
*) usage ;;
esac
