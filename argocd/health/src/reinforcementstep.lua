-- Argo CD health of rft-operator.io/ReinforcementStep.
-- Runs in Argo CD's Lua 5.1 sandbox: base and table libraries only (no string, no math).
--   COMPLETED                          Healthy
--   FAILED, EXPIRED                    Degraded
--   CANCELLED                          Suspended: a person stopped it on purpose (spec.cancel);
--                                      nothing is broken and it never resumes, but no Model
--                                      came out of it, so it must not read Healthy either
--   Suspended condition True           Suspended (spec.suspend)
--   CREATING, VALIDATING, PENDING,
--   RUNNING, WRITING_RESULTS           Progressing
--   no status, or status.observedGeneration < metadata.generation: Progressing until the
--   operator has seen the latest spec; a finished step never changes again, so its terminal
--   phase wins over a stale observedGeneration.

--@include common.lua

local TERMINAL = {
  JOB_STATE_COMPLETED = "Healthy",
  JOB_STATE_FAILED = "Degraded",
  JOB_STATE_EXPIRED = "Degraded",
  JOB_STATE_CANCELLED = "Suspended",
}

local hs = {}
local status = obj.status
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted"
  return hs
end
if type(status) ~= "table" or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for rft-operator to pick up the step"
  return hs
end

local succeeded = condition(status, "Succeeded")
if succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = first(succeeded.message, status.message, status.phase)
  return hs
end
if TERMINAL[status.phase] ~= nil then
  hs.status = TERMINAL[status.phase]
  hs.message = first(succeeded and succeeded.message, status.message, status.phase)
  return hs
end
if succeeded ~= nil and succeeded.status == "False" then
  -- Finished without success, whatever the phase says (the condition is the contract).
  hs.status = "Degraded"
  hs.message = first(succeeded.message, status.message, status.phase)
  return hs
end

local generation = tonumber(obj.metadata.generation) or 0
local observed = tonumber(status.observedGeneration)
if observed == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for rft-operator to observe generation " .. generation
  return hs
end

local suspended = condition(status, "Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = first(suspended.message, status.message, "Suspended (spec.suspend)")
  return hs
end

hs.status = "Progressing"
hs.message = first(status.message, status.phase)
local progress = status.progress
if status.phase == "JOB_STATE_RUNNING" and type(progress) == "table" and progress.step ~= nil
    and progress.totalSteps ~= nil then
  hs.message = hs.message .. " (step " .. progress.step .. "/" .. progress.totalSteps .. ")"
end
return hs
