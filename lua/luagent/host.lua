--- llm.host: the script's side of an embedding host (luagent.h).
---
--- The host queues events with la_event_push(rt, name, fmt, ...); tasks take
--- them here. The host starts a handler with la_call(rt, name, fmt, ...);
--- scripts send text and results back with emit(name, payload), which calls
--- the host's la_on_event callback. C modules the host registered with
--- la_register are plain `require(name)` modules.
local core = require "luagent.host.core"

local M = {}

--- The next event of any name: suspends the task until one is queued.
--- @param seconds number? give up after this long
--- @return string|nil name the event's name, or nil on timeout
--- @return any ... the event's values, or "timeout"
function M.next(seconds) return core.next(seconds) end

--- The next event called `name` (others stay queued for other waiters).
--- @param name string
--- @param seconds number? give up after this long
--- @return any ... the event's values, or nil, "timeout"
function M.wait(name, seconds) return core.wait(name, seconds) end

--- Takes a queued event without waiting: as next (no name) or wait (name),
--- or nil when none is queued.
--- @param name string?
function M.poll(name) return core.poll(name) end

--- Iterates over events as they come: `for name, a, b in llm.host.events() do`.
--- Ends when `seconds` pass without one (never, without seconds).
--- @param seconds number?
--- @return function iterator
function M.events(seconds)
  return function()
    local name, a, b, c, d, e, f, g, h = core.next(seconds)
    if name == nil then return nil end
    return name, a, b, c, d, e, f, g, h
  end
end

--- Calls the host's la_on_event callback with name and payload (a string).
--- @param name string
--- @param payload string?
--- @return boolean delivered false when the host set no callback
function M.emit(name, payload) return core.emit(name, payload) end

--- Registers fn as what la_call(rt, name, ...) starts, as a new task.
--- @param name string
--- @param fn function|nil nil removes the handler
function M.handle(name, fn) return core.handle(name, fn) end

--- Number of events queued and not yet taken.
--- @return integer
function M.pending() return core.pending() end

return M
