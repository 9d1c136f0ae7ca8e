-- Argo CD health for usersync's kinds (ConnectorHealth, DirectoryMapping, SyncPolicy,
-- DirectoryUser): the same verdict kstatus gives Flux.
if obj.kind == "DirectoryUser" then
  -- A user record: every lifecycle state is healthy; a spec change (an admin's
  -- preserve) is in progress until a run applies it.
  if obj.status ~= nil and obj.status.observedGeneration ~= nil
      and obj.status.observedGeneration ~= obj.metadata.generation then
    return {status = "Progressing", message = "a spec change waits for a run to apply it"}
  end
  local state = "not synced yet"
  if obj.status ~= nil and obj.status.state ~= nil then state = obj.status.state end
  return {status = "Healthy", message = state}
end
if obj.status == nil or obj.status.observedGeneration == nil
    or obj.status.observedGeneration ~= obj.metadata.generation then
  return {status = "Progressing", message = "waiting for the operator to observe this generation"}
end
local found = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    found[c.type] = c
  end
end
local stalled, reconciling, ready = found["Stalled"], found["Reconciling"], found["Ready"]
if stalled ~= nil and stalled.status == "True" then
  return {status = "Degraded", message = stalled.message}
end
if reconciling ~= nil and reconciling.status == "True" then
  return {status = "Progressing", message = reconciling.message}
end
if ready ~= nil and ready.status == "True" then
  if ready.reason == "Suspended" then
    return {status = "Suspended", message = ready.message}
  end
  return {status = "Healthy", message = ready.message}
end
local message = "waiting for the operator"
if ready ~= nil then message = ready.message end
return {status = "Progressing", message = message}
