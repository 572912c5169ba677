-- batch_summaries.lua: summarise many documents as a resumable batch.
-- Each summary is committed as it completes; kill the script (Ctrl-C,
-- kill -9, a reboot) and run it again: it does only what is missing. With
-- --store redis://host:port/0, run it on several machines at once and
-- they share the work.
--   luagent scripts/batch_summaries.lua [--model provider/name] [--docs n]
--     [--store sqlite:PATH | redis://host:port/db] [--name batch-name] [--concurrency n]
-- The documents are generated (a stand-in for io.lines("ids.txt")).
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock", docs = 200, concurrency = 16,
                             store = "sqlite:.luagent/batches.db", name = "", ["mock-delay"] = 0.001 },
  "usage: luagent scripts/batch_summaries.lua [--model provider/name] [--docs n]"
  .. " [--store sqlite:PATH|redis://...] [--name batch-name] [--concurrency n]")

local name = opts.name ~= "" and opts.name or ("summaries-" .. opts.model:gsub("[^%w]+", "-"))
local batch = assert(llm.batch{ name = name, store = opts.store, concurrency = opts.concurrency,
                                progress = "Summaries" })

-- The input: documents with stable ids (a rerun adds nothing twice).
local TOPICS = { "tides", "bees", "bridges", "comets", "ferns", "glaciers", "lanterns" }
local function documents()
  local i = 0
  return function()
    i = i + 1
    if i > opts.docs then return nil end
    local topic = TOPICS[i % #TOPICS + 1]
    return { id = ("doc-%04d"):format(i), topic = topic,
             text = ("Document %d is about %s. "):format(i, topic):rep(i % 5 + 1) }
  end
end
assert(batch:add_all(documents()))

local stats = assert(batch:run(function(doc)
  local r, err = llm.completion{
    model = opts.model,
    messages = { { role = "system", content = "Summarise the document in one line." },
                 { role = "user", content = doc.text } },
    mock_response = opts.mock and ("%s: a short note about %s."):format(doc.id, doc.topic) or nil,
    mock_delay = opts.mock_delay,
  }
  if not r then return nil, err end            -- recorded, retried, then kept as failed
  return r.choices[1].message.content
end))

print(("this run: %d done, %d failed, %d retried in %.2f s"):format(
  stats.done, stats.failed, stats.retried, stats.elapsed))
print(("batch %s: %d/%d done, %d failed"):format(name, stats.batch_done, stats.total, stats.batch_failed))
local shown = 0
for id, summary, err in batch:results() do
  if shown == 3 then break end
  shown = shown + 1
  print(id .. ": " .. (summary or ("FAILED: " .. tostring(err and err.message))))
end
batch:close()
