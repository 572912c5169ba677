--- luagent: LLM completions and streams as plain sequential Lua, with
--- thousands of tasks on one libuv loop. See README.md and DESIGN.md.
local core = require "luagent.core"
local errors = require "luagent.errors"
local async = require "luagent.async"

core.set_error_mt(errors.mt)
async.install_coroutines()

local M = {
  _VERSION = "luagent 0.1.0",
  errors = errors,
}

-- Tasks and time
M.spawn = core.spawn
M.sleep = core.sleep
M.now = core.now
M.current = core.current
M.gather = async.gather
M.map = async.map
M.timeout = async.timeout
M.semaphore = async.semaphore
M.run = async.run

--- Debug counters: tasks alive, libuv handles open, registry references
--- held, HTTP transfer objects alive. Specs assert they return to zero.
M.debug = core.debug

-- Modules loaded on first use, so `luagent -e ""` starts fast.
local lazy = {
  http = "luagent.http",
}
return setmetatable(M, {
  __index = function(t, k)
    local name = lazy[k]
    if not name then return nil end
    local mod = require(name)
    rawset(t, k, mod)
    return mod
  end,
})
