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

--@include common.lua
--@include observed.lua noun="training session"

if status.phase == "IDLE" then
  local idle = condition(status, "Ready")
  hs.status = "Suspended"
  hs.message = first(idle and idle.message, status.message, "IDLE")
  return hs
end

--@include readiness.lua
