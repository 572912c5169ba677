--- Low-level HTTP for scripts and providers: llm.http.request{...}.
--- The transfer itself is runtime/http.c (see its header for the options);
--- this module adds redirects, which are followed here rather than by
--- libcurl so that credentials never travel to another host.
local hcore = require "luagent.http.core"
local errors = require "luagent.errors"

local M = {}

local MAX_REDIRECTS = 5
local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

-- Headers that carry credentials: dropped when a redirect changes host
-- (libcurl itself only drops Authorization and Cookie).
local SECRET_HEADERS = {
  authorization = true, ["proxy-authorization"] = true, cookie = true,
  ["x-api-key"] = true, ["api-key"] = true, ["x-goog-api-key"] = true,
}

local function origin(url)
  return (url:match("^(%a[%w+.-]*://[^/?#]+)") or ""):lower()
end

-- The absolute URL a Location header points to, seen from base.
local function resolve(base, loc)
  if loc:match("^%a[%w+.-]*://") then return loc end
  if loc:sub(1, 2) == "//" then return base:match("^%a[%w+.-]*:") .. loc end
  if loc:sub(1, 1) == "/" then return origin(base) .. loc end
  local dir = base:gsub("[?#].*$", ""):gsub("[^/]*$", "")
  return dir .. loc
end

local function without_secrets(headers)
  if type(headers) ~= "table" then return headers end
  local out = {}
  for k, v in pairs(headers) do
    if type(k) ~= "string" or not SECRET_HEADERS[k:lower()] then out[k] = v end
  end
  return out
end

local function one(opts)
  local resp, err = hcore.request(opts)
  if err and err.message then err.message = errors.redact(err.message) end
  return resp, err
end

-- Follows up to MAX_REDIRECTS redirects; 303 (and 301/302 after a POST)
-- turn into a GET without a body, as browsers and curl do.
local function follow(opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.redirects = nil
  for hop = 0, MAX_REDIRECTS do
    local resp, err = one(o)
    if not resp then return nil, err end
    local status, loc = resp.status, resp.headers.location
    if not REDIRECT[status] or not loc then return resp end
    resp:close()
    if hop == MAX_REDIRECTS then
      return nil, errors.new("APIConnectionError",
        ("more than %d redirects"):format(MAX_REDIRECTS), { status = status })
    end
    local nxt = resolve(o.url, loc)
    if origin(nxt) ~= origin(o.url) then o.headers = without_secrets(o.headers) end
    local method = (o.method or (o.body and "POST" or "GET")):upper()
    if status == 303 or ((status == 301 or status == 302) and method == "POST") then
      o.method, o.body = "GET", nil
    end
    o.url = nxt
  end
end

--- Sends a request and suspends until the status and headers arrive.
--- redirects = true follows up to 5 redirects (off by default); a redirect
--- to another host drops the credential headers.
---@param opts {url:string, method?:string, headers?:table, body?:string, stream?:boolean, framing?:"sse"|"ndjson"|"none", connect_timeout?:number, first_event_timeout?:number, idle_timeout?:number, timeout?:number, max_event?:integer, max_body?:integer, buffer_size?:integer, ca_file?:string, redirects?:boolean, transport?:"auto"|"lean"|"curl"}
---@return userdata|nil resp, table|nil err
function M.request(opts)
  if type(opts) ~= "table" then error("llm.http.request: expects a table of options", 2) end
  if opts.redirects then return follow(opts) end
  return one(opts)
end

--- The absolute URL a Location header (or any reference) points to, seen
--- from base.
M.resolve = resolve

--- The C stream framer on its own: framer("sse"|"ndjson" [, max_event]);
--- f:feed(bytes) -> {{data=, event=, id=}, ...} | nil, err;
--- f:finish() -> events [, "incomplete"].
M.framer = hcore.framer

return M
