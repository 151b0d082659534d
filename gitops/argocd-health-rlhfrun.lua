-- Argo CD health check for rlhf.dev/RLHFRun (resource.customizations.health.rlhf.dev_RLHFRun).
--
-- The RLHFRun status follows kstatus: status.observedGeneration plus Ready / Reconciling /
-- Stalled conditions (metav1.Condition), a Healthy condition (False while a stage's guard is
-- tripped, e.g. KL above maxKL), and a phase (Pending, Running, Succeeded, Failed, Suspended).
-- Mapping, first match wins:
--   no status, or status older than the spec (observedGeneration < generation) -> Progressing
--   Stalled=True, or phase Failed                                              -> Degraded
--   Healthy=False (a guard tripped)                                            -> Degraded
--   phase Suspended, or spec.suspend with an up-to-date status                 -> Suspended
--   Ready=True, or phase Succeeded                                             -> Healthy
--   anything else (Pending, Running, Reconciling=True)                         -> Progressing
-- A condition whose own observedGeneration is older than metadata.generation is ignored.

local hs = { status = "Progressing", message = "Waiting for the rlhf-operator to act on the run" }

local status = obj.status
if status == nil then
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if generation ~= nil then
  if status.observedGeneration == nil or status.observedGeneration < generation then
    hs.message = "Waiting for the rlhf-operator to observe generation " .. tostring(generation)
    return hs
  end
end

-- Current conditions by type (stale ones are skipped).
local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    local current = true
    if generation ~= nil and condition.observedGeneration ~= nil
        and condition.observedGeneration < generation then
      current = false
    end
    if current and condition.type ~= nil then
      conditions[condition.type] = condition
    end
  end
end

local function is_true(type_name)
  local condition = conditions[type_name]
  return condition ~= nil and condition.status == "True"
end

local function describe(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return fallback
end

local phase = status.phase
local stage = ""
if status.currentStage ~= nil and status.currentStage ~= "" then
  stage = " (stage " .. status.currentStage .. ")"
end

if is_true("Stalled") or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(conditions["Stalled"], "The run failed" .. stage)
  return hs
end

local healthy = conditions["Healthy"]
if healthy ~= nil and healthy.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(healthy, "A guard tripped" .. stage)
  return hs
end

local suspend_requested = obj.spec ~= nil and obj.spec.suspend == true
if phase == "Suspended" or (suspend_requested and phase ~= "Succeeded") then
  hs.status = "Suspended"
  hs.message = describe(nil, "The run is suspended" .. stage)
  return hs
end

if is_true("Ready") or phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(conditions["Ready"], "All stages succeeded")
  return hs
end

if is_true("Reconciling") then
  hs.message = describe(conditions["Reconciling"], "Training" .. stage)
elseif phase ~= nil then
  hs.message = describe(nil, "Phase " .. phase .. stage)
end
return hs
