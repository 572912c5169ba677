-- bench/gateway_lua.lua -- the gateway's Lua work per request, in process:
--   build/mockllm --port-file /tmp/m.port &
--   build/luagent bench/gateway_lua.lua PORT [N] [CHUNKS]
-- Runs N streaming requests one after another through Gateway:_complete
-- (the handler llm.serve calls) against build/mockllm, with a request and
-- a response object that only hold the body and drop what is written (no
-- HTTP server: what is left is the gateway's part, the router, the
-- completion, the provider and the HTTP client). Prints the Lua garbage
-- per request (KB, the collector stopped) and the CPU per request; run it
-- under `valgrind --tool=callgrind` at two values of N for the
-- instructions a request (the difference over the difference in N).
local llm = require "luagent"
local gateway = require "luagent.gateway"

local port, n, chunks = tonumber(arg[1]), tonumber(arg[2] or "1000"), tonumber(arg[3] or "1")
assert(port, "usage: luagent bench/gateway_lua.lua MOCK_PORT [N] [CHUNKS]")
local cfg = gateway.config.normalise({ model_list = { { model_name = "bench", litellm_params = {
  model = "openai/bench", api_key = "sk-bench",
  api_base = ("http://127.0.0.1:%d/s/chunks=%d/v1"):format(port, chunks) } } } })
local g = gateway.new(cfg)
local BODY = '{"model":"bench","messages":[{"role":"user","content":"hi"}],'
  .. '"stream":true,"stream_options":{"include_usage":true}}'

local req = { headers = { ["content-type"] = "application/json" } }
function req.body() return BODY end
local res, written = {}, 0
function res.sse_start() end
function res.write(_, s) written = written + #s return true end
function res.sse() end
function res.sink() end     -- (no server: relayed bytes come as Lua strings)
function res.json(_, status) error("answered " .. status) end
function res.send(_, status) error("answered " .. status) end

local route = g:routes()["POST /v1/chat/completions"]
llm.run(function()
  for _ = 1, 20 do route(req, res) end   -- warm-up: the connection pool
  collectgarbage("collect")
  collectgarbage("stop")
  local kb, t0 = collectgarbage("count"), os.clock()
  for i = 1, n do
    route(req, res)
    if i % 200 == 0 then   -- keep the heap small; counted apart
      local before = collectgarbage("count")
      collectgarbage("collect")
      kb = kb - (before - collectgarbage("count"))
      collectgarbage("stop")
    end
  end
  local garbage = collectgarbage("count") - kb
  io.write(("%d requests x %d chunks: %.2f KB of garbage a request, %.1f us CPU a request (%d bytes out)\n")
    :format(n, chunks, garbage / n, (os.clock() - t0) / n * 1e6, written))
end)
