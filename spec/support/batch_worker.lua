-- A batch worker for the integration specs (a separate luagent process,
-- killed and restarted by them):
--   luagent batch_worker.lua STORE NAME MOCK_URL N CONCURRENCY DELAY_MS CLAIM_IDLE OUT [BACKLOG]
-- Runs items "item1".."itemN" through the mock server, one request each
-- on the scenario "first_delay=DELAY_MS,tag=NAME-<item>" (so the server counts
-- requests per item), and writes the run's stats as JSON to OUT.
local llm = require "luagent"
local cjson = require "cjson"

local store, name, mock, n, conc, delay, idle, out, backlog = table.unpack(arg, 1, 9)
n, conc, delay, idle = tonumber(n), tonumber(conc), tonumber(delay), tonumber(idle)

local batch = assert(llm.batch{ name = name, store = store, concurrency = conc,
                                claim_idle = idle, retry_delay = 0.05,
                                commit_backlog = backlog and math.tointeger(tonumber(backlog)) })
local items = {}
for i = 1, n do items[i] = "item" .. i end
assert(batch:add_all(items))
local stats = assert(batch:run(function(item)
  local r, err = llm.completion{
    model = "openai/gpt-4o-mini", api_key = "sk-test", num_retries = 0,
    api_base = ("%s/s/first_delay=%d,tag=%s-%s/v1"):format(mock, delay, name, item),
    messages = { { role = "user", content = item } },
  }
  if not r then return nil, err end
  return { item = item, text = r.choices[1].message.content }
end))
local f = assert(io.open(out, "w"))
f:write(cjson.encode(stats))
f:close()
