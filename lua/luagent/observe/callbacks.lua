--- luagent.observe.callbacks — llm.callbacks: functions told about every
--- call (LiteLLM's callback names). Each runs in its own task, so a slow
--- callback never delays the call and a raising one never breaks it (its
--- error is logged once, with its traceback).
---
---   llm.callbacks.add{on_success = function(ev) print(ev.model, ev.cost) end}
---   llm.completion{..., callbacks = {on_failure = fn}}   -- one call
---
--- The event: id, call_type, model, provider, metadata (the call's
--- metadata=), start_time, end_time (unix seconds), ttft, duration
--- (seconds), usage (+ usage_estimated), cost (dollars, + cost_estimated),
--- attempts, error (as returned to the script), response (for streams the
--- assembled response), stream, messages, event (the callback's name).
local events = require "luagent.observe.events"

local M = {}

local NAMES = {}
for _, n in ipairs(events.CALLBACK_NAMES) do NAMES[n] = true end

--- Checks a callback set; raises naming `what` on a bad one.
function M.check(set, what)
  if type(set) ~= "table" then error(("%s must be a table {on_success = fn, ...}"):format(what), 4) end
  for k, v in pairs(set) do
    if not NAMES[k] then
      error(("%s: unknown callback '%s' (on_request, on_first_token, on_success, on_failure, "
        .. "on_retry, on_fallback)"):format(what, tostring(k)), 4)
    end
    if type(v) ~= "function" then error(("%s: %s must be a function"):format(what, k), 4) end
  end
end

--- Adds a global callback set; returns it (for remove).
---@param set table {on_request=, on_first_token=, on_success=, on_failure=, on_retry=, on_fallback=}
---@return table
function M.add(set)
  M.check(set, "llm.callbacks.add")
  local list = {}
  for i, s in ipairs(events.global) do list[i] = s end
  list[#list + 1] = set
  events.global = list       -- a new list: calls in flight keep theirs
  events.refresh()
  return set
end

--- Removes a global callback set added with add; true when it was there.
function M.remove(set)
  local list, found = {}, false
  for _, s in ipairs(events.global) do
    if s == set and not found then found = true else list[#list + 1] = s end
  end
  events.global = list
  events.refresh()
  return found
end

--- Removes every global callback set.
function M.clear()
  events.global = {}
  events.refresh()
end

return M
