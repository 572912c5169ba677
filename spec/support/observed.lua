-- What the observers wrote, read back by the observability specs: the log
-- lines of a piece of work, and the OTLP spans the loopback mock server
-- (build/mockllm, doubling as the collector) received.
local proc = require "proc"
local cjson = require "cjson.safe"

local M = {}

--- Runs fn with luagent's log going to a temporary file at `level`
--- (opts.json: JSON lines; opts.prompts: LUAGENT_LOG_PROMPTS), restores
--- the log's settings however fn ends, and returns what was written.
---@param level string
---@param opts table|nil {json=, prompts=}
---@param fn function
---@return string text
function M.log_of(level, opts, fn)
  local log = require "luagent.observe.log"
  local path = proc.tmpname("obslog")
  opts = opts or {}
  log.out = assert(io.open(path, "w"))
  log.set_level(level)
  log.json, log.prompts = opts.json or false, opts.prompts or false
  local ok, err = pcall(fn)
  log.out:close()
  log.out, log.json, log.prompts = io.stderr, false, false
  log.set_level(nil)
  local text = proc.read(path)
  os.remove(path)
  if not ok then error(err, 0) end
  return text
end

--- The spans the mock server received on /v1/traces, flattened in order;
--- each POST is checked to be JSON (assert: busted's).
---@param mock table servers.mock()'s handle
---@param assert table
---@return table[] spans
function M.spans(mock, assert)
  local spans = {}
  for _, q in ipairs(mock.requests()) do
    if q.path == "/v1/traces" then
      assert.are.equal("application/json", q.headers["content-type"])
      local body = assert(cjson.decode(q.body))
      for _, rs in ipairs(body.resourceSpans) do
        for _, ss in ipairs(rs.scopeSpans) do
          for _, sp in ipairs(ss.spans) do spans[#spans + 1] = sp end
        end
      end
    end
  end
  return spans
end

--- A span's attributes as {key = value} (ints stay OTLP's strings).
---@param span table
---@return table
function M.attrs(span)
  local a = {}
  for _, kv in ipairs(span.attributes) do
    local v = kv.value
    a[kv.key] = v.stringValue or v.intValue or v.doubleValue
                or (v.arrayValue and v.arrayValue.values[1].stringValue)
    if v.boolValue ~= nil then a[kv.key] = v.boolValue end
  end
  return a
end

--- Puts every observer back as it was before a spec (callbacks, log,
--- OTLP exporter, run summary), waits for the callback tasks and budget
--- pushes still running, then checks nothing was left open.
---@param assert table busted's
function M.reset(assert)
  require("luagent.observe.callbacks").clear()
  require("luagent.observe.log").set_level(nil)
  local otlp = require "luagent.observe.otlp"
  otlp.flush()
  otlp.configure{}
  require("luagent.observe.stats").reset()
  require("luagent").sleep(0.05)
  require("servers").assert_clean(assert)
end

return M
