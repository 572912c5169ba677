-- basic_streaming.lua: print a reply token by token, as it arrives.
-- (LiteLLM chapter 4, "Basic Streaming".)
--   luagent scripts/basic_streaming.lua [--model provider/name]
-- Without --model it runs on the built-in mock provider: no key, no network.
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock" },
  "usage: luagent scripts/basic_streaming.lua [--model provider/name]")

local stream = assert(llm.completion{
  model = opts.model,
  messages = { { role = "user", content = "Write a short story about AI" } },
  stream = true,
  -- The mock provider streams whatever we script; real models ignore this.
  mock_response = opts.mock and "Once upon a time, a small model learned to stream. "
    .. "Each word left as soon as it was ready, and the reader never had to wait." or nil,
})

-- A stream is an iterator of OpenAI-shaped chunks; a failure half-way is
-- raised here, never a silent early end.
for chunk in stream do
  local choice = chunk.choices[1]          -- a usage-only chunk has none
  local text = choice and choice.delta.content
  if text then
    io.write(text)
    io.flush()
  end
end
print()   -- new line at the end
