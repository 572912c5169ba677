-- bench/serve_http.lua -- the HTTP side of the serve benchmark: one small
-- JSON route on llm.serve (bench/serve_bench.lua compares it with nginx
-- serving the same bytes as a static file).
--   luagent bench/serve_http.lua PORT
local llm = require "luagent"
local srv = assert(llm.serve{ port = tonumber(arg[1]) or 0, routes = {
  ["GET /json"] = function(_, res) res:json(200, { ok = true, model = "luagent-mock", n = 42 }) end,
} })
print(("listening on http://127.0.0.1:%d"):format(srv.port))
io.stdout:flush()
