--- luagent.errors — the error objects every operational failure returns.
--
-- An error is a plain table {type=, message=, status=, provider=, model=, ...}
-- with metatable `M.mt`, so `assert(llm.completion{...})` prints one clear line.
-- The C runtime builds Cancelled and Timeout errors itself with the same
-- metatable, which is why `__tostring` tolerates any missing field.
--
-- Decisions (the error types are README.md's):
-- * 422 maps to BadRequestError (status 422 kept): our type set has no
--   UnprocessableEntityError and both mean "the request itself is wrong".
-- * 409 maps to APIError (status 409) and is retryable by its status.
-- * ContextWindowExceededError counts as a BadRequestError for `M.is`, as in
--   LiteLLM where it subclasses BadRequestError.
-- * BudgetExceeded (llm.budget, lua/luagent/observe/budget.lua) is never
--   retried and never falls back: another model would spend the same money.
-- * StreamIncomplete is retryable (the connection died); the retry layer still
--   refuses once content reached the script. Cancelled is never retryable.
-- * `err.should_retry == false` (from an `x-should-retry: false` header, or
--   OpenAI's insufficient_quota) vetoes a retry; `true` can make an otherwise
--   unlisted error retryable but never overrides the 400/401/403/404/422 rule.
local M = {}

--- Every error type luagent produces.
M.types = {
  "AuthenticationError", "PermissionDeniedError", "NotFoundError", "BadRequestError",
  "ContextWindowExceededError", "RateLimitError", "Timeout", "APIConnectionError",
  "InternalServerError", "ServiceUnavailableError", "APIError", "StreamIncomplete",
  "Cancelled", "BudgetExceeded",
}

local parent = { ContextWindowExceededError = "BadRequestError" }

-- Status an error of a given type carries when it has to be invented (mock).
local default_status = {
  BadRequestError = 400, ContextWindowExceededError = 400, AuthenticationError = 401,
  PermissionDeniedError = 403, NotFoundError = 404, Timeout = 408, RateLimitError = 429,
  InternalServerError = 500, ServiceUnavailableError = 503, APIError = 500,
}

local reason_phrase = {
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [408] = "Request Timeout", [409] = "Conflict", [413] = "Payload Too Large",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout", [529] = "Overloaded",
}

-- ---------------------------------------------------------------------------
-- Redaction
-- ---------------------------------------------------------------------------

-- Case-insensitive Lua pattern for a literal word such as "x-api-key".
local function ci(word)
  return (word:gsub("%a", function(c) return "[" .. c:lower() .. c:upper() .. "]" end)
              :gsub("[%-%.]", "%%%0"))
end

local REDACTED = "[REDACTED]"

local secret_names = {
  "proxy-authorization", "authorization", "x-goog-api-key", "x-api-key", "api-key",
  "api_key", "apikey",
}
local name_patterns = {}
for i, name in ipairs(secret_names) do
  -- `name: value`, `"name": "value"`, `name=value`, `["name"] = "value"`
  name_patterns[i] = "(" .. ci(name) .. "[\"']?%]?%s*[:=]%s*[\"']?)[^\"'\r\n,;}&]+"
end

-- Query parameters whose name ends in key or token (Gemini's ?key=, ?api_key=,
-- ?access_token=): the value runs to the next separator.
local query_patterns = {
  "([?&;][%w_%-]*" .. ci("key") .. "=)[^&%s#\"'<>]+",
  "([?&;][%w_%-]*" .. ci("token") .. "=)[^&%s#\"'<>]+",
}

-- Token shapes of the providers' keys: prefix and the minimum body length, long
-- enough that words like "sk-learn" are left alone.
local token_shapes = {
  { "sk%-", 8 }, { "sk_", 16 }, { "gsk_", 16 }, { "xai%-", 16 }, { "AIza", 20 },
  { "hf_", 16 }, { "r8_", 16 },
}

-- The literal keys this process has used (M.add_secret): a key of any
-- shape (a proxy's, a 32-hex, a dotted token) is caught even when no
-- pattern below knows it. Longest first, so a key containing another is
-- removed whole; at most MAX_SECRETS, the oldest dropped.
local secrets, secret_seen, serial = {}, {}, 0
local MAX_SECRETS, MIN_SECRET = 64, 5

--- Registers a literal secret (an API key about to be sent): from now on
--- `M.redact` removes it wherever it appears. Shorter than 5 bytes or not a
--- string: ignored (it would blank ordinary words, and is no secret).
---@param s any
function M.add_secret(s)
  if type(s) ~= "string" or #s < MIN_SECRET then return end
  serial = serial + 1
  local seen = secret_seen[s]
  if seen then                   -- used again: the newest, so a key in use is never the one dropped
    seen.n = serial
    return
  end
  if #secrets >= MAX_SECRETS then
    local oldest, at = math.huge, nil
    for i, e in ipairs(secrets) do if e.n < oldest then oldest, at = e.n, i end end
    secret_seen[table.remove(secrets, at).s] = nil
  end
  local e = { s = s, pat = (s:gsub("%W", "%%%0")), n = serial }
  secret_seen[s] = e             -- its entry: a key sent again is found without a walk
  secrets[#secrets + 1] = e
  table.sort(secrets, function(a, b) return #a.s > #b.s end)
end

--- Removes API-key-looking material from a string: every key registered
--- with `M.add_secret`, values of Authorization, x-api-key, x-goog-api-key
--- (and similar) headers, `key=`/`token=` query parameters, Bearer tokens
--- and provider key shapes (sk-..., AIza...). Non-strings are returned
--- unchanged.
---@param s any
---@return any
function M.redact(s)
  if type(s) ~= "string" then return s end
  for i = 1, #secrets do
    local e = secrets[i]
    if s:find(e.s, 1, true) then s = s:gsub(e.pat, REDACTED) end
  end
  for _, p in ipairs(name_patterns) do s = s:gsub(p, "%1" .. REDACTED) end
  for _, p in ipairs(query_patterns) do s = s:gsub(p, "%1" .. REDACTED) end
  s = s:gsub("(" .. ci("bearer") .. "%s+)[^%s\"',;]+", "%1" .. REDACTED)
  for _, shape in ipairs(token_shapes) do
    local prefix, min = shape[1], shape[2]
    s = s:gsub("%f[%w]" .. prefix .. "([%w_%-]+)", function(body)
      if #body >= min then return REDACTED end
    end)
  end
  return s
end

local secret_key_set = {}
for _, name in ipairs(secret_names) do secret_key_set[name] = true end

-- luagent.json's array marker, looked up lazily: errors loads at startup, cjson need not
local json_array_mt

-- Deep copy with every string redacted and secret-named keys blanked. Tables
-- with a metatable are objects (another error, a stream) and are kept as they
-- are, except JSON arrays, which are data.
local function redact_value(v, depth)
  if type(v) == "string" then return M.redact(v) end
  if type(v) ~= "table" or depth > 8 then return v end
  local mt = getmetatable(v)
  if mt ~= nil then
    json_array_mt = json_array_mt or require("luagent.json").array_mt
    if mt ~= json_array_mt then return v end
  end
  local out = setmetatable({}, mt)
  for k, x in pairs(v) do
    if type(k) == "string" and secret_key_set[k:lower()] then
      out[k] = REDACTED
    else
      out[k] = redact_value(x, depth + 1)
    end
  end
  return out
end

-- ---------------------------------------------------------------------------
-- Error objects
-- ---------------------------------------------------------------------------

local function one_line(s)
  return (tostring(s):gsub("%s*[\r\n]+%s*", " "))
end

local function describe(err)
  local head = tostring(rawget(err, "type") or "Error")
  local message = rawget(err, "message")
  local s = head
  if message ~= nil and message ~= "" then
    s = head .. ": " .. one_line(M.redact(tostring(message)))
  end
  local extra = {}
  local status, provider, model = rawget(err, "status"), rawget(err, "provider"), rawget(err, "model")
  if status then extra[#extra + 1] = "status " .. tostring(status) end
  if provider then extra[#extra + 1] = "provider " .. tostring(provider) end
  if model then extra[#extra + 1] = "model " .. tostring(model) end
  local attempts = rawget(err, "attempts")
  if type(attempts) == "number" and attempts > 1 then
    extra[#extra + 1] = "after " .. attempts .. " attempts"
  end
  if #extra > 0 then s = s .. " (" .. table.concat(extra, ", ") .. ")" end
  return one_line(M.redact(s))
end

--- The metatable of every luagent error (the C runtime uses it too).
M.mt = { __name = "luagent.Error", __tostring = describe }

--- Creates an error. `fields` are copied (status, provider, model, retry_after,
--- attempts, code, provider_type, body, ...); every string in them and the
--- message pass through `M.redact`.
---@param type_ string one of M.types
---@param message string|nil
---@param fields table|nil
---@return table err
function M.new(type_, message, fields)
  assert(type(type_) == "string", "errors.new: type must be a string")
  local err = {}
  if fields then
    for k, v in pairs(fields) do
      if not (type(k) == "string" and secret_key_set[k:lower()]) then
        err[k] = redact_value(v, 0)
      end
    end
  end
  err.type = type_
  err.message = message ~= nil and M.redact(tostring(message)) or nil
  return setmetatable(err, M.mt)
end

--- True when v is a luagent error table.
---@param v any
---@return boolean
function M.is_error(v)
  return type(v) == "table" and getmetatable(v) == M.mt
end

--- True when err is an error of `type_` or of a subtype of it.
---@param err any
---@param type_ string
---@return boolean
function M.is(err, type_)
  if type(err) ~= "table" or getmetatable(err) ~= M.mt then return false end
  local t = err.type
  while t do
    if t == type_ then return true end
    t = parent[t]
  end
  return false
end

--- The status an error of this type gets when none is known (for mock errors).
---@param type_ string
---@return integer|nil
function M.default_status(type_)
  return default_status[type_]
end

--- The standard reason phrase of an HTTP status, or nil.
---@param status integer
---@return string|nil
function M.reason_phrase(status)
  return reason_phrase[status]
end

--- The error type an HTTP status maps to (README.md's table).
---@param status integer|nil
---@return string type
---@return boolean known false when the status fell through to APIError
function M.type_for_status(status)
  if status == 400 or status == 422 then return "BadRequestError", true end
  if status == 401 then return "AuthenticationError", true end
  if status == 403 then return "PermissionDeniedError", true end
  if status == 404 then return "NotFoundError", true end
  if status == 408 then return "Timeout", true end
  if status == 429 then return "RateLimitError", true end
  if status == 500 then return "InternalServerError", true end
  if status == 502 or status == 503 or status == 504 or status == 529 then
    return "ServiceUnavailableError", true
  end
  if status == 409 then return "APIError", true end
  return "APIError", false
end

--- Creates the error an HTTP status maps to (see `M.type_for_status`).
---@param status integer
---@param provider string|nil
---@param model string|nil
---@param message string|nil defaults to "HTTP <status> <reason>"
---@param fields table|nil extra fields
---@return table err
function M.from_status(status, provider, model, message, fields)
  local f = {}
  if fields then for k, v in pairs(fields) do f[k] = v end end
  f.status, f.provider, f.model = status, provider, model
  if message == nil or message == "" then
    message = "HTTP " .. tostring(status) .. (reason_phrase[status] and (" " .. reason_phrase[status]) or "")
  end
  return M.new((M.type_for_status(status)), message, f)
end

local always_retry = {
  APIConnectionError = true, Timeout = true, RateLimitError = true,
  InternalServerError = true, ServiceUnavailableError = true, StreamIncomplete = true,
}
local never_retry = {
  BadRequestError = true, ContextWindowExceededError = true, AuthenticationError = true,
  PermissionDeniedError = true, NotFoundError = true, Cancelled = true,
  BudgetExceeded = true,   -- llm.budget: spending more is what it prevents
}
local never_status = { [400] = true, [401] = true, [403] = true, [404] = true, [422] = true }

--- Whether a retry may help (SDK semantics, see the module comment).
---@param err any
---@return boolean
function M.retryable(err)
  if type(err) ~= "table" then return false end
  if never_retry[err.type] or never_status[err.status] then return false end
  if err.should_retry == false then return false end
  if always_retry[err.type] then return true end
  local s = err.status
  if s == 408 or s == 409 or s == 429 or (type(s) == "number" and s >= 500) then return true end
  return err.should_retry == true
end

-- ---------------------------------------------------------------------------
-- Retry-After
-- ---------------------------------------------------------------------------

--- Header lookup that ignores the case of the name; a list value gives its first.
---@param headers table|nil
---@param name string lower-case
---@return string|nil
function M.header(headers, name)
  if type(headers) ~= "table" then return nil end
  local v = headers[name]
  if v == nil then
    for k, x in pairs(headers) do
      if type(k) == "string" and k:lower() == name then v = x break end
    end
  end
  if type(v) == "table" then v = v[1] end
  if type(v) == "number" then v = tostring(v) end
  return type(v) == "string" and v or nil
end

-- A plain non-negative decimal ("20", "1.5"); Lua's tonumber would also take
-- hex, "inf" spellings and exponents, none of which a server means.
local function decimal(s)
  local d = s:match("^%s*(%d+%.?%d*)%s*$") or s:match("^%s*(%.%d+)%s*$")
  return d and tonumber(d) or nil
end

local months = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
                 jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 }

-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm),
-- so dates are read as UTC without touching the process time zone.
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime) into epoch seconds.
---@param s string
---@return integer|nil
function M.parse_http_date(s)
  local d, mon, y, hh, mm, ss = s:match("^%s*%a+,%s*(%d%d?)%s+(%a+)%s+(%d%d%d%d)%s+(%d%d):(%d%d):(%d%d)%s+GMT%s*$")
  if not d then
    d, mon, y, hh, mm, ss = s:match("^%s*%a+,%s*(%d%d)%-(%a+)%-(%d%d)%s+(%d%d):(%d%d):(%d%d)%s+GMT%s*$")
    if y then y = tonumber(y) y = y < 70 and 2000 + y or 1900 + y end
  end
  if not d then
    mon, d, hh, mm, ss, y = s:match("^%s*%a+%s+(%a+)%s+(%d%d?)%s+(%d%d):(%d%d):(%d%d)%s+(%d%d%d%d)%s*$")
  end
  if not d then return nil end
  local m = months[mon:lower()]
  d, y, hh, mm, ss = tonumber(d), tonumber(y), tonumber(hh), tonumber(mm), tonumber(ss)
  if not m or d < 1 or d > 31 or hh > 23 or mm > 59 or ss > 60 then return nil end
  return days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss
end

local function positive(x)
  if x and x == x and x > 0 and x < math.huge then return x end
  return nil
end

--- Seconds to wait according to `retry-after-ms`, then `retry-after` (seconds
--- or an HTTP-date relative to `now_epoch`). Zero, negative, empty, non-finite
--- or unparsable values give nil. Large values are returned as they are: the
--- retry layer decides whether to wait that long.
---@param headers table|nil
---@param now_epoch number|nil defaults to os.time()
---@return number|nil seconds
function M.parse_retry_after(headers, now_epoch)
  local ms = M.header(headers, "retry-after-ms")
  local secs = ms and decimal(ms)
  if positive(secs) then return secs / 1000 end
  local ra = M.header(headers, "retry-after")
  if not ra then return nil end
  secs = decimal(ra)
  if secs then return positive(secs) end
  local at = M.parse_http_date(ra)
  if not at then return nil end
  return positive(at - (now_epoch or os.time()))
end

-- ---------------------------------------------------------------------------
-- HTTP error bodies
-- ---------------------------------------------------------------------------

local MAX_SNIPPET = 200
local MAX_BODY = 2000

-- Redacts before clipping, with some slack, so a key straddling the cut is
-- still seen whole and no prefix of it survives.
local function redact_clip(s, n)
  s = M.redact(s:sub(1, n + 256))
  if #s > n then s = s:sub(1, n) .. "..." end
  return s
end

local function clip(s, n)
  s = s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  return redact_clip(s, n)
end

--- A one-line, markup-free summary of a body that is not the provider's JSON:
--- an HTML page gives its <title> (or first line of text), plain text its first
--- non-empty line, at most ~200 bytes, redacted.
---@param body string|nil
---@return string|nil
function M.summarize_body(body)
  if type(body) ~= "string" or body:match("^%s*$") then return nil end
  local head = M.redact(body:sub(1, 8192))
  local lower = head:lower()
  if lower:match("^%s*<") and (lower:find("<html", 1, true) or lower:find("<!doctype", 1, true)
      or lower:find("<head", 1, true) or lower:find("<body", 1, true) or lower:find("<title", 1, true)) then
    local title = lower:find("<title", 1, true) and head:match("<[Tt][Ii][Tt][Ll][Ee][^>]*>(.-)</")
    local text = title
    if not text or text:match("^%s*$") then
      local plain = head:gsub("<[Ss][Cc][Rr][Ii][Pp][Tt].-</[Ss][Cc][Rr][Ii][Pp][Tt]>", "")
                        :gsub("<[Ss][Tt][Yy][Ll][Ee].-</[Ss][Tt][Yy][Ll][Ee]>", "")
                        :gsub("<[^>]*>", "\n")
      text = plain:match("([^\n]*%S[^\n]*)")
    end
    return 'HTML page "' .. clip(text or "", MAX_SNIPPET) .. '"'
  end
  local line = head:match("([^\r\n]*%S[^\r\n]*)")
  return clip(line, MAX_SNIPPET)
end

--- Builds the error of a failed HTTP response once a provider has read its
--- body. `o` = {type=, status=, headers=, body=, provider=, model=, message=,
--- provider_type=, code=, retry_after=, now=}. Adds retry_after (headers first,
--- then o.retry_after from the body), request_id, should_retry and a clipped,
--- redacted copy of the body.
---@param o table
---@return table err
function M.http_error(o)
  local status = o.status
  local message = o.message
  if message == nil or message == "" then
    local summary = M.summarize_body(o.body)
    message = "HTTP " .. tostring(status) .. (reason_phrase[status] and (" " .. reason_phrase[status]) or "")
    if summary then message = message .. ": " .. summary end
  end
  local location = type(status) == "number" and status >= 300 and status < 400
    and M.header(o.headers, "location")
  if location then
    -- API calls never follow redirects (credentials could travel with them)
    message = message .. " (a redirect to " .. M.snippet(location) ..
      ", not followed: set api_base to the final URL)"
  end
  local retry_after = M.parse_retry_after(o.headers, o.now) or positive(o.retry_after)
  local should = M.header(o.headers, "x-should-retry")
  local should_retry = o.should_retry
  if should == "true" then should_retry = true elseif should == "false" then should_retry = false end
  local body = o.body
  if type(body) == "string" then body = redact_clip(body, MAX_BODY) end
  return M.new(o.type or (M.type_for_status(status)), message, {
    status = status, provider = o.provider, model = o.model,
    provider_type = o.provider_type, code = o.code, retry_after = retry_after,
    request_id = M.header(o.headers, "x-request-id") or M.header(o.headers, "request-id"),
    should_retry = should_retry, body = body,
  })
end

--- Shortens and redacts a fragment of untrusted data for a message.
---@param s string
---@param n integer|nil default 200
---@return string
function M.snippet(s, n)
  s = redact_clip(tostring(s), n or MAX_SNIPPET)
  return (s:gsub("%c", " "))
end

return M
