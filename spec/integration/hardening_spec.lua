-- Hardening (issue 14): malformed, cut-short and hostile responses from a
-- real loopback server (build/mockllm in its own process) must give typed
-- errors that name the cause, never Lua runtime errors, never silent
-- success, and never the API key.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"

local MSGS = { { role = "user", content = "Hello" } }

describe("hardening #integration", function()
  local mock, dir

  -- Writes fixture `name` (served by scenario fixture=NAME or raw=NAME).
  local function fixture(name, bytes)
    proc.write(dir .. "/" .. name, bytes)
    return name
  end

  setup(function()
    dir = proc.tmpname("fixtures")
    os.execute("mkdir -p " .. dir)
    mock = servers.mock("--fixtures " .. dir)
  end)
  teardown(function()
    mock.stop()
    os.execute("rm -rf " .. dir)
  end)
  after_each(function() servers.assert_clean(assert) end)

  local function openai(scen, extra)
    local p = { model = "openai/gpt-test", api_base = mock.url .. "/s/" .. mock.scenario(scen) .. "/v1",
                api_key = "sk-test-key-123456", messages = MSGS, num_retries = 0 }
    for k, v in pairs(extra or {}) do p[k] = v end
    return p
  end

  -- The error of a call: stream or not, the first failure the script sees.
  local function call_error(p)
    local ok, r, err = pcall(llm.completion, p)
    assert(ok, "raised a Lua error: " .. tostring(r))
    if r and p.stream then
      local text
      ok, text, err = pcall(r.text, r)
      assert(ok, "raised a Lua error: " .. tostring(text))
      r:close()
      if text then return nil, text end
    elseif r then
      return nil, r
    end
    return err
  end

  -- Everything the script can see of an error, as one string.
  local function visible(err)
    local parts = { tostring(err), tostring(err.message), tostring(err.body) }
    for _, a in ipairs(err.attempts or {}) do parts[#parts + 1] = tostring(a.message) end
    local ok, tb = pcall(error, err)
    parts[#parts + 1] = debug.traceback(tostring(tb))
    return table.concat(parts, "\n")
  end

  describe("headers cut short", function()
    for name, head in pairs({ status_only = "HTTP/1.1 200 OK\r\n",
                              half_block = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Half: ye" }) do
      for _, stream in ipairs({ false, true }) do
        it(("%s, stream=%s: a retryable APIConnectionError naming the cause"):format(name, stream), function()
          local raw = fixture("short_" .. name, head)
          local err = call_error(openai("raw=" .. raw, { stream = stream }))
          assert.is_table(err)
          assert.are.equal("APIConnectionError", err.type)
          assert.matches("before the response headers ended", err.message)
          assert.is_true(require("luagent.errors").retryable(err))
        end)
      end
    end
  end)
end)
