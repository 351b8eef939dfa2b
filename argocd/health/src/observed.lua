
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
