#!/usr/bin/env bash
# Smoke test of a running test control plane: checks what usersync's tests
# rely on. Run after `tests/cluster.sh up` (same DIR argument, if any):
#   tests/controlplane/smoke.sh [DIR]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
eval "$("$here/../cluster.sh" env "${1:-}")"

ns=smoke-$$
passed=0 failed=0
check() {
	local name=$1
	shift
	if "$@" >/dev/null; then
		passed=$((passed + 1))
		echo "ok   $name"
	else
		failed=$((failed + 1))
		echo "FAIL $name"
	fi
}
# eventually SECONDS CMD...: CMD succeeds within SECONDS.
eventually() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}
absent() { ! kubectl get "$@" >/dev/null 2>&1; }

cleanup() {
	kubectl delete ns "$ns" --wait=false >/dev/null 2>&1 || true
	kubectl delete crd smokewidgets.smoke.usersync.test --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

check "apiserver ready" kubectl get --raw /readyz
check "server version is set" bash -c 'kubectl version -o json | grep -q "\"gitVersion\": \"v1\.[1-9]"'
kubectl create ns "$ns" >/dev/null

# Namespace controller: a deleted namespace (with content) disappears.
kubectl create ns "$ns-gone" >/dev/null
kubectl create configmap c -n "$ns-gone" >/dev/null
kubectl delete ns "$ns-gone" --wait=false >/dev/null
check "namespace deletion completes" eventually 60 absent ns "$ns-gone"

# Garbage collector: deleting an owner deletes its dependents.
kubectl create configmap owner -n "$ns" >/dev/null
uid=$(kubectl get configmap owner -n "$ns" -o jsonpath='{.metadata.uid}')
kubectl apply -n "$ns" -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: dependent
  ownerReferences:
  - {apiVersion: v1, kind: ConfigMap, name: owner, uid: "$uid"}
EOF
kubectl delete configmap owner -n "$ns" >/dev/null
check "ownerReferences cascade" eventually 30 absent configmap dependent -n "$ns"

# Service accounts: tokens, and impersonation through RBAC.
kubectl create serviceaccount x -n "$ns" >/dev/null
check "kubectl create token" bash -c "kubectl create token x -n '$ns' | grep -q '^ey'"
check "impersonated SA is denied" bash -c \
	"[[ \$(kubectl auth can-i get pods -n '$ns' --as=system:serviceaccount:$ns:x) == no ]]"
kubectl create rolebinding x-view -n "$ns" --clusterrole=view --serviceaccount="$ns:x" >/dev/null
# The RBAC authorizer reads from an informer: grants apply within moments.
check "RBAC grant applies" eventually 10 bash -c \
	"[[ \$(kubectl auth can-i get pods -n '$ns' --as=system:serviceaccount:$ns:x) == yes ]]"

# CRDs are served and their schema reaches `kubectl explain`.
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: smokewidgets.smoke.usersync.test
spec:
  group: smoke.usersync.test
  scope: Namespaced
  names: {plural: smokewidgets, singular: smokewidget, kind: SmokeWidget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, description: Size of the widget.}
EOF
check "CRD established" kubectl wait --for=condition=Established crd/smokewidgets.smoke.usersync.test --timeout=30s
check "kubectl explain on a CRD" eventually 30 bash -c 'kubectl explain smokewidget.spec.size | grep -q "Size of the widget"'

check "helm version" bash -c 'helm version --short | grep -q "^v3\."'
check "helm talks to the cluster" helm list -A

echo "smoke: $passed passed, $failed failed"
((failed == 0))
