--- luagent: LLM completions and streams as plain sequential Lua, with
--- thousands of tasks on one libuv loop. See README.md and docs/architecture.md.
local core = require "luagent.core"
local errors = require "luagent.errors"
local async = require "luagent.async"

core.set_error_mt(errors.mt)
async.install_coroutines()

local M = {
  _VERSION = "luagent " .. core.VERSION,   -- runtime/luagent.h's LA_VERSION
  errors = errors,
}

-- Tasks and time
M.spawn = core.spawn
M.background = core.background   -- a task that runs after the others in a budgeted step
M.sleep = core.sleep
M.now = core.now
M.current = core.current
M.resolve = core.resolve     -- host name -> address, on libuv's thread pool
M.gather = async.gather
M.map = async.map
M.timeout = async.timeout
M.semaphore = async.semaphore
M.run = async.run

--- Debug counters: tasks alive, libuv handles open, registry references
--- held, HTTP transfer objects alive. Specs assert they return to zero.
M.debug = core.debug

-- Modules loaded on first use, so `luagent -e ""` starts fast:
-- field = {module, field of the module (nil: the module itself)}.
local lazy = {
  http = { "luagent.http" },
  completion = { "luagent.completion", "completion" },
  embedding = { "luagent.embedding", "embedding" },
  stream_chunk_builder = { "luagent.chunks", "build" },
  ratelimit = { "luagent.ratelimit", "new" },
  router = { "luagent.router", "new" },
  agent = { "luagent.agent", "new" },
  chat = { "luagent.chat" },          -- callable: llm.chat{...}; llm.chat.load(path)
  progress = { "luagent.progress" },
  files = { "luagent.files" },
  term = { "luagent.term" },
  args = { "luagent.args", "parse" },
  json = { "luagent.json" },
  host = { "luagent.host" },
  serve = { "luagent.serve", "serve" },
  callbacks = { "luagent.observe.callbacks" },
  cost = { "luagent.observe.cost", "completion_cost" },
  models = { "luagent.observe.cost" },          -- llm.models.info / .register
  token_counter = { "luagent.observe.cost", "token_counter" },
  budget = { "luagent.observe.budget", "new" },
  stats = { "luagent.observe.stats" },          -- callable: llm.stats()
  otlp = { "luagent.observe.otlp" },            -- llm.otlp.flush(), .dropped
  log = { "luagent.observe.log" },
  exec = { "luagent.process", "exec" },
  process = { "luagent.process", "process" },
  mcp = { "luagent.mcp" },          -- llm.mcp.connect{...}, llm.mcp.serve{...}
  cache = { "luagent.cache" },        -- callable: llm.cache{...}; llm.cache.default
  batch = { "luagent.batch", "new" },
}

-- Settings that live in a module: llm.num_retries = 0 works as in LiteLLM.
local settings = { num_retries = "luagent.completion", default_model = "luagent.completion" }

return setmetatable(M, {
  __index = function(t, k)
    if settings[k] then return require(settings[k])[k] end
    local entry = lazy[k]
    if not entry then return nil end
    local mod = require(entry[1])
    local v = entry[2] and mod[entry[2]] or mod
    rawset(t, k, v)
    return v
  end,
  __newindex = function(t, k, v)
    if settings[k] then require(settings[k])[k] = v else rawset(t, k, v) end
  end,
})
