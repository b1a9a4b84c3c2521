-- Argo CD health of a modelworks.dev TrainingJob.
-- The operator summarises a training in the Succeeded condition (metav1.Condition):
-- True once the run finished and its model is registered, False on a terminal failure
-- (pods failed, quality gate refused the model, artifact missing, invalid spec), Unknown
-- while it runs.
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
local status = obj.status
if meta.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "TrainingJob is being deleted"
  return hs
end
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local summary = find(status.conditions, "Succeeded")
local generation = meta.generation
if generation ~= nil then
  local observed = status.observedGeneration
  if observed == nil or observed < generation
      or (summary ~= nil and summary.observedGeneration ~= nil and summary.observedGeneration < generation) then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    return hs
  end
end

local stalled = find(status.conditions, "Stalled")
if (stalled ~= nil and stalled.status == "True") or (summary ~= nil and summary.reason == "InvalidSpec") then
  hs.status = "Degraded"
  hs.message = say(stalled ~= nil and stalled.status == "True" and stalled or summary, "InvalidSpec")
  return hs
end

if summary ~= nil and summary.status == "True" then
  hs.status = "Healthy"
  hs.message = summary.message or "Training succeeded"
  return hs
end
if (summary ~= nil and summary.status == "False") or status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = say(summary, "Training failed")
  return hs
end

local suspended = find(status.conditions, "Suspended")
if (suspended ~= nil and suspended.status == "True") or status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = say(suspended, "TrainingJob is suspended")
  return hs
end

hs.status = "Progressing"
hs.message = say(summary, "Training is in progress")
return hs
