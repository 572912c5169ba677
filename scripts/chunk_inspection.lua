-- chunk_inspection.lua: what a stream chunk holds: content, finish_reason,
-- usage. (LiteLLM chapter 4, "Understanding Stream Chunks".)
--   luagent scripts/chunk_inspection.lua [--model provider/name]
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock" },
  "usage: luagent scripts/chunk_inspection.lua [--model provider/name]")

local stream = assert(llm.completion{
  model = opts.model,
  messages = { { role = "user", content = "Count to 10 slowly" } },
  stream = true,
  stream_options = { include_usage = true },   -- usage arrives on the last chunk
  mock_response = opts.mock and "1, 2, 3, 4, 5, 6, 7, 8, 9, 10." or nil,
})

local function show_usage(u)
  if not u then return "nil" end
  return ("prompt_tokens=%d completion_tokens=%d total_tokens=%d")
    :format(u.prompt_tokens or 0, u.completion_tokens or 0, u.total_tokens or 0)
end

-- Every provider's chunks are OpenAI chat.completion.chunk tables; JSON
-- null is plain nil, so absent fields print as nil.
local i = 0
for chunk in stream do
  local choice = chunk.choices[1] or {}
  local delta = choice.delta or {}
  print(("Chunk %d:"):format(i))
  print(("  Content: %s"):format(delta.content == nil and "nil" or ("%q"):format(delta.content)))
  print(("  Finish reason: %s"):format(tostring(choice.finish_reason)))
  print(("  Usage: %s"):format(show_usage(chunk.usage)))
  print()
  i = i + 1
end

-- The assembled response (llm.stream_chunk_builder) is always at hand.
local resp = stream:response()
print(("Assembled: %q (finish_reason %s, %d chunks)")
  :format(resp.choices[1].message.content, resp.choices[1].finish_reason, i))
