{{/*
What the operator may do with the objects it manages. The same rules go into one
ClusterRole (all namespaces) or into a Role in each watched namespace. Every rule
says why it is there; a test checks that none is without its comment.
Nothing here allows delete: a Deleted user is a tombstone in its status, and the
admin's objects are the admin's.
*/}}
{{- define "usersync.managedRules" -}}
# The admin's objects: the controllers watch them and a run reads its mapping,
# policy and connector when it starts. The operator never writes their spec.
- apiGroups: ["usersync.dev"]
  resources: ["connectorhealths", "directorymappings", "syncpolicies", "provisioningtargets"]
  verbs: ["get", "list", "watch"]
# A mapping's metadata: the operator adds and removes its finalizer on a
# DirectoryMapping with a patch (metadata only; the spec stays the admin's).
- apiGroups: ["usersync.dev"]
  resources: ["directorymappings"]
  verbs: ["patch"]
# The API server checks `update` on this subresource before it lets anyone set
# finalizers or blockOwnerDeletion owner references pointing at a mapping.
- apiGroups: ["usersync.dev"]
  resources: ["directorymappings/finalizers"]
  verbs: ["update"]
# Status is the operator's: Ready/Connected conditions, run results, counts,
# written by server-side apply (the `patch` verb) to the status subresource only.
- apiGroups: ["usersync.dev"]
  resources: ["connectorhealths/status", "directorymappings/status", "syncpolicies/status", "provisioningtargets/status"]
  verbs: ["patch"]
# Approvals of blocked runs: the mapping controller watches them and reads one
# again before it uses it. The operator never creates or edits an approval.
- apiGroups: ["usersync.dev"]
  resources: ["runapprovals"]
  verbs: ["get", "list", "watch"]
# An approval's status says whether it was used (and by which run) or is stale.
- apiGroups: ["usersync.dev"]
  resources: ["runapprovals/status"]
  verbs: ["patch"]
{{- if eq .Values.store.type "kubernetes" }}
# The user registry (store: kubernetes): the operator watches the namespace's
# users (a list, then a watch) and runs plan from that copy; a run creates and
# updates them by server-side apply, which needs both `create` (for a new user) and
# `patch`, and reads one by name when a write finds it changed. No delete: a
# deleted user stays as a tombstone.
- apiGroups: ["usersync.dev"]
  resources: ["directoryusers"]
  verbs: ["get", "list", "watch", "create", "patch"]
# A user's lifecycle state (Active, Preserved, Deleted) lives in its status.
- apiGroups: ["usersync.dev"]
  resources: ["directoryusers/status"]
  verbs: ["patch"]
{{- end }}
# Events on mappings, connectors and users (runs, blocked deletions, collisions),
# one object per occurrence, through the core API so that they carry their first
# and last time.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
Reading Secrets: a right of its own, in a ClusterRole that is bound per namespace
by a RoleBinding (never cluster-wide), so the operator reads the Secrets of only
the namespaces that granted it. Even there it uses a Secret only when its owner
labelled it usersync.dev/credential=true.
*/}}
{{- define "usersync.secretReaderRules" -}}
# Bind passwords, client secrets and CA certificates that connectors name. `get`
# reads a referenced Secret when a connector is probed or a run starts; `list`
# and `watch` feed a metadata-only watch of the namespace's credential Secrets
# (values are never cached), so that a rotated or newly allowed credential
# re-checks its connector at once.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/*
Leader election: one Lease in the release namespace, and nothing else there.
*/}}
{{- define "usersync.leaderElectionRules" -}}
# Taking the Lease the first time creates it. RBAC sees no object name on a
# create, so this rule cannot be limited to the Lease's name.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
# Reading the Lease to learn who leads, and renewing or taking it over, only for
# the operator's own Lease.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "usersync.leaseName" . | quote }}]
  verbs: ["get", "update"]
{{- end }}

{{/*
The example approver's rights: approving a blocked run is a right apart from
editing mappings (bind it to the people who approve, not to mapping editors).
*/}}
{{- define "usersync.approverRules" -}}
# Approve a blocked run: `usersync approve` creates a RunApproval in the
# approver's name (the admission policy checks the name); get and list show
# what became of one.
- apiGroups: ["usersync.dev"]
  resources: ["runapprovals"]
  verbs: ["create", "get", "list", "watch"]
# See which run waits for approval and what it would do (status.blockedRun).
- apiGroups: ["usersync.dev"]
  resources: ["directorymappings"]
  verbs: ["get", "list", "watch"]
{{- end }}
