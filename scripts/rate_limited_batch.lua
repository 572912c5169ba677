-- rate_limited_batch.lua: ten requests under a per-minute limit. The
-- limiter is shared by every task; callers wait in turn (FIFO) and no
-- request goes out beyond the limit. (LiteLLM chapter 4, "Rate Limiting
-- with Async".)
--   luagent scripts/rate_limited_batch.lua [--model provider/name] [--rpm n] [--per seconds]
-- --rpm is the limit per minute (default 50, as in the chapter); --per
-- shortens the window to watch the limiter at work: --rpm 4 --per 1.
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock", rpm = 50, per = 60 },
  "usage: luagent scripts/rate_limited_batch.lua [--model provider/name] [--rpm n] [--per seconds]")

local limiter = opts.per == 60 and llm.ratelimit{ rpm = opts.rpm }
  or llm.ratelimit{ requests = opts.rpm, per = opts.per }
print(("limit: %s"):format(tostring(limiter)))

local t0 = llm.now()
local function idea(i)
  return function()
    local response = assert(llm.completion{
      model = opts.model,
      messages = { { role = "user", content = ("Generate idea %d"):format(i) } },
      rate_limit = limiter,           -- waits for a permit before sending
      mock_response = opts.mock and ("Idea %d: a tool that explains its own "
        .. "rate limits, politely and at length."):format(i) or nil,
    })
    return { done_at = llm.now() - t0, response = response }
  end
end

local fns = {}
for i = 0, 9 do fns[#fns + 1] = idea(i) end
local results = llm.gather(table.unpack(fns))

for i, r in ipairs(results) do
  local content = r.response.choices[1].message.content or ""
  local cut = utf8.offset(content, 51) or #content + 1
  print(("Idea %d (done at %5.2f s): %s..."):format(i - 1, r.done_at, content:sub(1, cut - 1)))
end
local s = limiter:stats()
print(("%d requests in the window, %d waiting"):format(s.requests_in_window, s.waiting))
