-- spec/support/gateway_proc.lua -- scripts/gateway.lua as a separate
-- process for the gateway specs: start it on a config, stop it, and POST a
-- chat completion to it.
local llm = require "luagent"
local proc = require "proc"
local json = require "luagent.json"

local M = {}

--- The upstream key the specs give the gateway (UPSTREAM_KEY): it must
--- never reach a client.
M.CANARY = "upstream-canary-7f3a9c2e51d8b4"

-- Starts the gateway on a config file (text, written to a temporary file,
-- or a path) with extra environment; returns {url=, port=, pid=, out=, err=}.
function M.start(opts)
  local cfg = opts.path
  if not cfg then
    cfg = proc.tmpname("gw.yaml")
    proc.write(cfg, opts.text)
  end
  local env = { "UPSTREAM_KEY=" .. M.CANARY }
  for k, v in pairs(opts.env or {}) do env[#env + 1] = ("%s='%s'"):format(k, v) end
  local out, err = proc.tmpname("out"), proc.tmpname("err")
  local pid = proc.start(("exec env %s %s scripts/gateway.lua --config %s --port 0 >%s 2>%s")
    :format(table.concat(env, " "), proc.bin, cfg, out, err))
  local deadline, port = llm.now() + 15, nil
  repeat
    port = (proc.read(out) or ""):match("^listening on http://127%.0%.0%.1:(%d+)\n")
    if not port then llm.sleep(0.02) end
  until port or llm.now() > deadline or not proc.alive(pid)
  assert(port, "the gateway did not start: " .. (proc.read(err) or ""))
  return { url = "http://127.0.0.1:" .. port, port = tonumber(port), pid = pid, out = out, err = err,
           cfg = not opts.path and cfg or nil }
end

function M.stop(g)
  proc.stop(g.pid)
  local logs = (proc.read(g.out) or "") .. (proc.read(g.err) or "")
  os.remove(g.out); os.remove(g.err)
  if g.cfg then os.remove(g.cfg) end
  return logs
end

-- POSTs a chat completion for `model` (or the body given) to gateway g with
-- key; returns the status, the body text and the response's headers.
function M.chat(g, key, model_or_body)
  local body = type(model_or_body) == "table" and model_or_body
               or { model = model_or_body, messages = { { role = "user", content = "hi" } } }
  local r = assert(llm.http.request{ url = g.url .. "/v1/chat/completions", method = "POST",
    headers = { ["content-type"] = "application/json", authorization = "Bearer " .. key },
    body = json.encode(body) })
  local text = r:body()
  r:close()
  return r.status, text, r.headers
end

return M
