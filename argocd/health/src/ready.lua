
local suspended = condition(status, "Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = first(suspended.message, status.message, "Suspended")
  return hs
end

--@include readiness.lua
