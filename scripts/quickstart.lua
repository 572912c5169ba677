-- quickstart.lua: streaming, concurrency and a fallback in under five
-- seconds, on the built-in mock provider (no key, no network).
--   luagent scripts/quickstart.lua [--model provider/model]
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock" },
  "usage: luagent scripts/quickstart.lua [--model provider/name]")
local model = opts.model

-- 1. Streaming: print tokens as they arrive.
print("== streaming from " .. model)
local stream = assert(llm.completion{
  model = model,
  messages = {{role = "user", content = "Say hello in one sentence."}},
  stream = true,
  stream_options = {include_usage = true},
})
for chunk in stream do
  local choice = chunk.choices[1]
  io.write(choice and choice.delta.content or "")
  io.flush()
end
local usage = stream:response().usage
print(("\n[%d tokens]"):format(usage and usage.total_tokens or 0))

-- 2. Concurrency: three requests at once, results in order.
print("\n== three requests at once")
local t0 = llm.now()
local topics = {"tea", "rain", "maps"}
local answers = llm.map(topics, function(topic)
  local r = assert(llm.completion{
    model = model,
    messages = {{role = "user", content = "One line about " .. topic}},
    mock_response = "A short line about " .. topic .. ".",
  })
  return r.choices[1].message.content
end, {concurrency = 3})
for i, a in ipairs(answers) do print(topics[i] .. ": " .. a) end
print(("(%.2f s for all three)"):format(llm.now() - t0))

-- 3. Fallback: the primary is overloaded, the fallback answers.
print("\n== fallback")
local r = assert(llm.completion{
  model = "mock/primary",
  messages = {{role = "user", content = "Hello?"}},
  mock_response = {error = "ServiceUnavailableError"},
  num_retries = 0,
  fallbacks = {{model = "mock/backup", mock_response = "The backup model answered."}},
})
print(r.model .. ": " .. r.choices[1].message.content)
