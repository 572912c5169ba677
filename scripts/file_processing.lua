-- file_processing.lua: a large document analysed section by section. The
-- file is read in constant memory (llm.files.chunks), a bounded number of
-- requests run at once (llm.map), a progress bar counts them, and each
-- analysis is printed in document order as soon as it and those before it
-- are done. (LiteLLM chapter 4, "Streaming File Processing".)
--   luagent scripts/file_processing.lua [FILE] [--model provider/name]
--          [--size chars] [--concurrency n]
-- Without FILE it analyses a generated sample document.
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock", size = 1200, concurrency = 4 },
  "usage: luagent scripts/file_processing.lua [FILE] [--model provider/name] "
  .. "[--size chars] [--concurrency n]")

-- A sample document: twelve paragraphs of varying length.
local function sample_document()
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  for i = 1, 12 do
    f:write(("Paragraph %d. "):format(i), ("Streams, tasks and limits. "):rep(5 + i * 3), "\n\n")
  end
  f:close()
  return path
end

local path, generated = opts[1], false
if not path then path, generated = sample_document(), true end

-- Sections end at paragraph breaks where they can (never inside a UTF-8
-- character); the iterator holds one block of the file at a time.
local sections = {}
for chunk in llm.files.chunks(path, { size = math.tointeger(opts.size), by = "paragraphs" }) do
  sections[#sections + 1] = chunk
end
if generated then os.remove(path) end

local SYSTEM = "You are analyzing a large document. Provide insights for this section."

-- One section's analysis, streamed and collected.
local function analyse(text, i)
  local _, paragraphs = text:gsub("\n%s*\n", "")
  local stream = assert(llm.completion{
    model = opts.model, stream = true, max_tokens = 500,
    messages = { { role = "system", content = SYSTEM },
                 { role = "user", content = "Analyze this section of the document:\n\n" .. text } },
    mock_response = opts.mock and ("Section %d holds %d characters in %d paragraph(s)."):format(
      i, utf8.len(text) or #text, math.max(paragraphs, 1)) or nil,
  })
  return assert(stream:text())
end

-- Results arrive out of order; print them in order as soon as possible.
local done, next_out = {}, 1
local function print_ready()
  while done[next_out] do
    llm.progress.print(("--- Section %d ---\n%s\n"):format(next_out, done[next_out]))
    next_out = next_out + 1
  end
end

local bar = llm.progress.bar{ total = #sections, text = "Sections" }
llm.map(sections, function(text, i)
  done[i] = analyse(text, i)
  bar:inc()
  print_ready()
end, { concurrency = math.tointeger(opts.concurrency) })
bar:done()
