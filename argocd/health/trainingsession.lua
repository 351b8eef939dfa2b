-- Argo CD health of rft-operator.io/TrainingSession.
-- Runs in Argo CD's Lua 5.1 sandbox: base and table libraries only (no string, no math).
-- Progressing until the operator has observed the latest generation (no status, or
-- status.observedGeneration < metadata.generation); then from the Ready condition:
--   Ready True (the pod answers)                 Healthy
--   phase IDLE (idle timeout: scaled to no pod)  Suspended
--   Ready False while CREATING                   Progressing
--   Ready False otherwise (FAILED)               Degraded
--   Ready Unknown                                Progressing
-- Without a Ready condition the phase decides (READY Healthy, FAILED Degraded). The message
-- is the Ready condition's (else status.message, else the phase).

local function condition(status, kind)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function first(...)
  for i = 1, select("#", ...) do
    local value = select(i, ...)
    if value ~= nil and value ~= "" then
      return value
    end
  end
  return ""
end

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
  hs.message = "Waiting for rft-operator to pick up the training session"
  return hs
end
local generation = tonumber(obj.metadata.generation) or 0
local observed = tonumber(status.observedGeneration) or 0
if observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for rft-operator to observe generation " .. generation
  return hs
end

if status.phase == "IDLE" then
  local idle = condition(status, "Ready")
  hs.status = "Suspended"
  hs.message = first(idle and idle.message, status.message, "IDLE")
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
