-- Argo CD health of a modelworks.dev DriftMonitor.
-- Ready=True: the monitor checks its target. Drift is a finding, not a fault: a monitor
-- that detects drift is doing its job and stays Healthy, with "Drift detected" in the
-- message (alerts come from the DriftDetected condition and the Prometheus gauges).
-- Written for Argo CD's sandbox (gopher-lua, Lua 5.1; from argocd-cm without useOpenLibs):
-- base functions only, no string library.
local hs = {}

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function say(c, fallback)
  if c == nil then
    return fallback
  end
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return fallback
end

local meta = obj.metadata or {}
local spec = obj.spec or {}
local status = obj.status
if meta.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "DriftMonitor is being deleted"
  return hs
end
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local ready = find(status.conditions, "Ready")
local generation = meta.generation
if generation ~= nil then
  local observed = status.observedGeneration
  if observed == nil or observed < generation
      or (ready ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation) then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    return hs
  end
end

if spec.suspend == true or status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "DriftMonitor is suspended"
  return hs
end

local stalled = find(status.conditions, "Stalled")
if (stalled ~= nil and stalled.status == "True") or (ready ~= nil and ready.reason == "InvalidSpec") then
  hs.status = "Degraded"
  hs.message = say(stalled ~= nil and stalled.status == "True" and stalled or ready, "InvalidSpec")
  return hs
end
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = say(ready, "DriftMonitor failed")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  local drift = find(status.conditions, "DriftDetected")
  if drift ~= nil and drift.status == "True" then
    if drift.message ~= nil and drift.message ~= "" then
      hs.message = "Drift detected: " .. drift.message
    else
      hs.message = "Drift detected"
    end
  else
    hs.message = ready.message or "No drift"
  end
  return hs
end

hs.status = "Progressing"
hs.message = say(ready, "Waiting for the first check")
return hs
