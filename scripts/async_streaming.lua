-- async_streaming.lua: streams without async/await. The script already runs
-- as a task, so a streaming call simply suspends it; several streams run
-- at once on one thread. (LiteLLM chapter 4, "Async Streaming".)
--   luagent scripts/async_streaming.lua [--model provider/name]
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock" },
  "usage: luagent scripts/async_streaming.lua [--model provider/name]")

-- Streams a completion; prints it when `echo`; returns the full text.
local function stream_completion(messages, echo, mock_text)
  local stream = assert(llm.completion{
    model = opts.model, messages = messages, stream = true, max_tokens = 300,
    mock_response = opts.mock and mock_text or nil,
  })
  local parts = {}
  for chunk in stream do
    local text = chunk.choices[1] and chunk.choices[1].delta.content
    if text then
      parts[#parts + 1] = text
      if echo then io.write(text) io.flush() end
    end
  end
  return table.concat(parts)
end

print("Streaming response:")
local content = stream_completion({ { role = "user", content = "Explain async programming" } }, true,
  "Async programming lets one thread wait on many things at once: while one "
  .. "request waits for the network, the others make progress.")
print(("\n\nFull content length: %d characters"):format(#content))

-- Three streams at once: they overlap, so the whole takes about as long as
-- the slowest one, not the sum.
print("\nThree streams at once:")
local t0 = llm.now()
local lengths = llm.gather(
  function() return #stream_completion({ { role = "user", content = "Explain tasks" } }, false) end,
  function() return #stream_completion({ { role = "user", content = "Explain coroutines" } }, false) end,
  function() return #stream_completion({ { role = "user", content = "Explain event loops" } }, false) end)
for i, n in ipairs(lengths) do print(("  stream %d: %d characters"):format(i, n)) end
print(("  all three in %.2f s"):format(llm.now() - t0))
