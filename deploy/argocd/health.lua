-- Argo CD health check for quantwise.dev/QuantizedModel.
--   Progressing: quantizing, validating, planning, deploying, or the operator has not yet
--                observed the latest spec (status.observedGeneration < metadata.generation).
--                While the Job runs, the message carries its stage (status.progress), e.g.
--                "Quantizing: calibrating 45% ~38m left".
--   Healthy:     phase Ready (the Ready condition is True): the endpoint serves.
--   Suspended:   spec.serving.replicas is 0 (nothing to serve, nothing wrong).
--   Degraded:    phase Failed, with the failing condition's reason and message (a failed
--                quality gate: QualityVerified QualityGateFailed with both perplexities).
-- Install: argocd-cm key resource.customizations.health.quantwise.dev_QuantizedModel
-- (see deploy/argocd/argocd-cm.yaml).
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c == nil then
    return nil
  end
  local text = c.type .. " " .. (c.reason or "")
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the quantwise operator to pick up the model"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local ready = condition(status, "Ready")

if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Failed"
  for _, kind in ipairs({"QualityVerified", "Quantized", "Validated", "Planned", "Deployed", "Ready"}) do
    local c = condition(status, kind)
    if c ~= nil and c.status == "False" then
      hs.message = describe(c)
      break
    end
  end
  return hs
end

if status.phase == "Ready" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  if status.endpoint ~= nil then
    hs.message = "Serving at " .. status.endpoint
  end
  return hs
end

if ready ~= nil and ready.reason == "ScaledToZero" then
  hs.status = "Suspended"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
hs.message = status.phase
if status.progress ~= nil and status.progress.message ~= nil and status.progress.message ~= "" then
  hs.message = status.phase .. ": " .. status.progress.message
  return hs
end
for _, kind in ipairs({"Ready", "Deployed", "Planned", "Validated", "Quantized"}) do
  local c = condition(status, kind)
  if c ~= nil and c.status ~= "True" then
    hs.message = status.phase .. ": " .. describe(c)
  end
end
return hs
