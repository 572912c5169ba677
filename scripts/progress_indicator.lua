-- progress_indicator.lua: a spinner while the model thinks, then the reply
-- streams. The spinner is drawn by a task sleeping on the loop: no thread,
-- nothing to join. It goes to stderr (stdout stays clean for piping) and,
-- off a terminal, prints plain lines instead of animating.
-- (LiteLLM chapter 4, "Progress Indicators".)
--   luagent scripts/progress_indicator.lua [--model provider/name] [--mock-delay s]
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock", ["mock-delay"] = 0.05 },
  "usage: luagent scripts/progress_indicator.lua [--model provider/name] [--mock-delay seconds]")

local messages = { { role = "user", content = "Write a 500-word essay about artificial intelligence" } }
local ESSAY = "Artificial intelligence began as a question: can a machine think? "
  .. "Decades later the question has changed to what we should ask of machines that "
  .. "seem to, and how we keep them honest."

-- 1. A spinner around a whole (non-streaming) request, as in the chapter.
local spinner = llm.progress.spinner("Generating response...")
local response, err = llm.completion{
  model = opts.model, messages = messages, max_tokens = 1000,
  mock_response = opts.mock and ESSAY or nil, mock_delay = opts.mock_delay,
}
if not response then
  spinner:fail("Request failed")
  error(err, 0)
end
spinner:stop("Response complete!")
print(response.choices[1].message.content)

-- 2. Streaming: the spinner shows until the first token arrives, then the
-- tokens take its place.
print()
local stream = assert(llm.progress.until_first(llm.completion, "Waiting for the first token...", {
  model = opts.model, messages = messages, stream = true, max_tokens = 1000,
  mock_response = opts.mock and ESSAY or nil, mock_delay = opts.mock_delay,
}))
for chunk in stream do
  local text = chunk.choices[1] and chunk.choices[1].delta.content
  if text then io.write(text) io.flush() end
end
print()

-- 3. A progress bar over several requests: count, rate and ETA.
local topics = { "history", "ethics", "safety", "economics", "art", "science" }
local bar = llm.progress.bar{ total = #topics, text = "Essay outlines" }
llm.map(topics, function(topic)
  local r = assert(llm.completion{
    model = opts.model, max_tokens = 100, mock_delay = opts.mock_delay,
    messages = { { role = "user", content = "Outline an essay on AI and " .. topic } },
    mock_response = opts.mock and ("An outline about AI and %s."):format(topic) or nil,
  })
  bar:inc()
  return r
end, { concurrency = 3 })
bar:done()
