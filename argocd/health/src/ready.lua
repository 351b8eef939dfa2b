
-- Phases in which Ready=False means "not yet" rather than "broken".
local UNDERWAY = { CREATING = true, UPDATING = true, DELETING = true, VALIDATING = true }

local hs = {}
local status = obj.status
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted"
  return hs
end
if type(status) ~= "table" or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for rft-operator to pick up the {{noun}}"
  return hs
end
local generation = tonumber(obj.metadata.generation) or 0
local observed = tonumber(status.observedGeneration) or 0
if observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for rft-operator to observe generation " .. generation
  return hs
end

local suspended = condition(status, "Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = first(suspended.message, status.message, "Suspended")
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
elseif ready ~= nil and ready.status == "False" then
  if UNDERWAY[status.phase] then
    hs.status = "Progressing"
  else
    hs.status = "Degraded"
  end
elseif ready == nil and status.phase == "READY" then
  hs.status = "Healthy"
elseif ready == nil and status.phase == "FAILED" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = first(ready and ready.message, status.message, status.phase)
return hs
