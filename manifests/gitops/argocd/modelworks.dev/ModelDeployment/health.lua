-- Argo CD health of a modelworks.dev ModelDeployment.
-- Ready=True: the resolved version serves. Degraded=True wins over Ready: after an
-- automatic rollback the last good version keeps serving, but the version Git asks for
-- does not (the Degraded message says why), which is what the application must show.
-- A canary in flight is Progressing, as a Deployment mid-rollout is.
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

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local meta = obj.metadata or {}
local status = obj.status
if meta.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "ModelDeployment is being deleted"
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

local stalled = find(status.conditions, "Stalled")
if is_true(stalled) or (ready ~= nil and ready.reason == "InvalidSpec") then
  hs.status = "Degraded"
  hs.message = say(is_true(stalled) and stalled or ready, "InvalidSpec")
  return hs
end
local degraded = find(status.conditions, "Degraded")
if is_true(degraded) then
  hs.status = "Degraded"
  hs.message = say(degraded, "ModelDeployment is degraded")
  return hs
end
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = say(ready, "ModelDeployment failed")
  return hs
end

local canary = status.canary
if is_true(ready) then
  if canary ~= nil and canary.version ~= nil then
    hs.status = "Progressing"
    local msg = "Canary of version " .. tostring(canary.version)
    if canary.step ~= nil and canary.weight ~= nil then
      msg = msg .. " at step " .. tostring(canary.step) .. " (" .. tostring(canary.weight) .. "% of traffic)"
    end
    hs.message = msg
    return hs
  end
  hs.status = "Healthy"
  hs.message = ready.message or "Serving"
  return hs
end

local progressing = find(status.conditions, "Progressing")
hs.status = "Progressing"
if is_true(progressing) then
  hs.message = say(progressing, "Rolling out")
else
  hs.message = say(ready, "Waiting for the model server to become ready")
end
return hs
