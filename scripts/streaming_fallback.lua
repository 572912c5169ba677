-- streaming_fallback.lua: the primary model times out, a fallback answers.
-- (LiteLLM chapter 4, "Streaming with Error Handling".)
--   luagent scripts/streaming_fallback.lua [--model provider/name]
--          [--fallback provider/name] [--timeout seconds]
-- On the mock provider the primary is scripted to time out; on a real model
-- first_token_timeout= gives up when no token arrives in time.
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/primary", fallback = "mock/fallback", timeout = 5 },
  "usage: luagent scripts/streaming_fallback.lua [--model provider/name] "
  .. "[--fallback provider/name] [--timeout seconds]")

local messages = { { role = "user", content = "Write a haiku about programming" } }
local HAIKU = "Silent loops unwind,\nthe stream flows token by token,\nbugs sleep until dawn."

-- The primary's parameters: on the mock, a scripted timeout.
local function primary_params(stream)
  return {
    model = opts.model, messages = messages, stream = stream,
    first_token_timeout = opts.timeout, num_retries = 0,
    mock_response = opts.mock and { error = "Timeout",
      message = ("no first token within %g s"):format(opts.timeout) } or nil,
  }
end

local function fallback_params(stream)
  return {
    model = opts.fallback, messages = messages, stream = stream, max_tokens = 300,
    mock_response = opts.fallback:match("^mock/") and HAIKU or nil,
  }
end

-- 1. By hand, as the chapter does: stream the primary; on failure ask the
-- fallback without streaming. A failure before the first byte comes back
-- as nil, err; one after it is raised by the iterator, hence the pcall.
local function streaming_with_fallback()
  local stream, err = llm.completion(primary_params(true))
  if stream then
    local parts = {}
    local ok, serr = pcall(function()
      for chunk in stream do
        local text = chunk.choices[1] and chunk.choices[1].delta.content
        if text then parts[#parts + 1] = text io.write(text) io.flush() end
      end
    end)
    if ok then return table.concat(parts), opts.model end
    err = serr
  end
  print(("\nPrimary model failed (%s: %s), trying fallback (%s)...")
    :format(opts.model, tostring(err), opts.fallback))
  io.write("Fallback: ")
  local response = assert(llm.completion(fallback_params(false)))
  local content = response.choices[1].message.content
  print(content)
  return content, opts.fallback
end

print("== by hand")
local _, model_used = streaming_with_fallback()
print(("\nUsed model: %s"):format(model_used))

-- 2. Built in: fallbacks= does the same in one call, and a stream falls
-- back transparently until its first content reaches the script.
print("\n== with fallbacks=")
local p = primary_params(true)
p.fallbacks = { fallback_params(true) }
local stream = assert(llm.completion(p))
for chunk in stream do
  local text = chunk.choices[1] and chunk.choices[1].delta.content
  if text then io.write(text) io.flush() end
end
print(("\n\nUsed model: %s"):format(stream.model))
