--- Low-level HTTP for scripts and providers: llm.http.request{...}.
--- See runtime/http.c for the options; this module only validates and
--- documents them.
local hcore = require "luagent.http.core"

local M = {}

--- Sends a request and suspends until the status and headers arrive.
---@param opts {url:string, method?:string, headers?:table, body?:string, stream?:boolean, framing?:"sse"|"ndjson"|"none", connect_timeout?:number, first_event_timeout?:number, idle_timeout?:number, timeout?:number, max_event?:integer, max_body?:integer, ca_file?:string, redirects?:boolean}
---@return userdata|nil resp, table|nil err
function M.request(opts)
  if type(opts) ~= "table" then error("llm.http.request: expects a table of options", 2) end
  local resp, err = hcore.request(opts)
  if err and err.message then
    err.message = require("luagent.errors").redact(err.message)
  end
  return resp, err
end

--- The C stream framer on its own: framer("sse"|"ndjson" [, max_event]);
--- f:feed(bytes) -> {{data=, event=, id=}, ...} | nil, err;
--- f:finish() -> events [, "incomplete"].
M.framer = hcore.framer

return M
