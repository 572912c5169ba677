-- concurrent_requests.lua: five requests at once with llm.gather; results
-- come back in order. (LiteLLM chapter 4, "Concurrent Requests".)
--   luagent scripts/concurrent_requests.lua [--model provider/name]
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock" },
  "usage: luagent scripts/concurrent_requests.lua [--model provider/name]")

local function fact(i)
  return function()
    return assert(llm.completion{
      model = opts.model,
      messages = { { role = "user", content = ("Tell me a fact about topic %d"):format(i) } },
      max_tokens = 100,
      mock_response = opts.mock and ("Topic %d is a fine topic: here is a fact about it, "
        .. "told at some length so that it needs trimming."):format(i) or nil,
    })
  end
end

local t0 = llm.now()
-- Each function runs in its own task; the first error cancels the others.
local responses = llm.gather(fact(0), fact(1), fact(2), fact(3), fact(4))
for i, response in ipairs(responses) do
  local content = response.choices[1].message.content or ""
  local cut = utf8.offset(content, 51) or #content + 1   -- 50 characters, whole
  print(("Topic %d: %s..."):format(i - 1, content:sub(1, cut - 1)))
end
print(("(5 requests in %.2f s)"):format(llm.now() - t0))
