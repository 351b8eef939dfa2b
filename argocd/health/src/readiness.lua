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
