-- luagent.observe without a network: the hook API's zero-cost path, task
-- context inheritance, budgets against the in-process mock provider,
-- argument checks, log formats.
local llm = require "luagent"
local core = require "luagent.core"
local errors = require "luagent.errors"
local events = require "luagent.observe.events"
local log = require "luagent.observe.log"
local proc = require "proc"

local MSGS = { { role = "user", content = "hi" } }

describe("observe #unit", function()
  after_each(function()
    llm.callbacks.clear()
    log.set_level(nil)
  end)

  it("builds no event when nothing observes a call", function()
    assert.is_false(events.any)
    assert.is_nil(events.request{ model = "openai/x", messages = MSGS })
    local s = assert(llm.completion{ model = "openai/x", mock_response = "a b", stream = true, messages = MSGS })
    assert.is_nil(rawget(s, "_ev"))
    s:text()
    llm.callbacks.add{ on_success = function() end }
    assert.is_true(events.any)
    local ev = events.request{ model = "openai/x", messages = MSGS }
    assert.truthy(ev and ev.id:match("^req_%x+$"))
    llm.callbacks.clear()
    assert.is_false(events.any)
  end)

  it("gives a spawned task its parent's context value, and only that task's changes stay its own", function()
    local seen = {}
    core.set_context({ tag = "parent" })
    local t = llm.spawn(function()
      seen[1] = core.context().tag
      core.set_context({ tag = "child" })
      seen[2] = llm.spawn(function() return core.context().tag end):await()
    end)
    t:await()
    seen[3] = core.context().tag
    core.set_context(nil)
    assert.are.same({ "parent", "child", "parent" }, seen)
    assert.is_nil(core.context())
  end)

  it("makes BudgetExceeded a known, never retried error type", function()
    local found = false
    for _, t in ipairs(errors.types) do found = found or t == "BudgetExceeded" end
    assert.is_true(found)
    assert.is_false(errors.retryable(errors.new("BudgetExceeded", "x")))
  end)

  it("checks its arguments", function()
    assert.has_error(function() llm.budget{} end, "llm.budget: give max_cost (dollars) or max_tokens")
    assert.has_error(function() llm.budget{ max_cost = -1 } end)
    assert.has_error(function() llm.budget{ max_cost = 1, redis = "redis://127.0.0.1:1" } end,
                     "llm.budget: a budget shared through redis= needs a name")
    assert.has_error(function() llm.budget{ max_cost = 1, colour = "red" } end)
    assert.has_error(function() llm.callbacks.add{ on_sucess = function() end } end)
    assert.has_error(function() llm.callbacks.add{ on_success = "print" } end)
    assert.has_error(function() llm.token_counter{ messages = "hi" } end)
    assert.has_error(function() llm.cost({ prompt_tokens = 1 }) end)
  end)

  it("charges the in-process mock too, and cuts its stream at the crossing chunk", function()
    llm.models.register{ ["mock/priced"] = { input = 1, output = 1000000 } }   -- $1 an output token
    local b = llm.budget{ max_cost = 3.5 }
    local s = assert(llm.completion{ model = "mock/priced", mock_response = "a b c d e f g h",
                                     stream = true, messages = MSGS, budget = b })
    local n = 0
    local ok, err = pcall(function()
      for c in s do
        local d = c.choices[1] and c.choices[1].delta
        if d and d.content and d.content ~= "" then n = n + 1 end
      end
    end)
    assert.is_false(ok)
    assert.are.equal("BudgetExceeded", err.type)
    assert.are.equal(4, n)        -- the 4th token takes the spending past $3.5
    assert.are.equal("a b c d", s:response().choices[1].message.content:gsub("%s+$", ""))
  end)

  it("writes text lines with quoted values and no secrets", function()
    local path = proc.tmpname("tlog")
    log.out = assert(io.open(path, "w"))
    log.set_level("info")
    local _, err = llm.completion{ model = "openai/x", num_retries = 0, messages = MSGS,
      mock_response = { error = "AuthenticationError", message = "bad key sk-abcdefghijklmnopqrstuvwx" } }
    assert.are.equal("AuthenticationError", err.type)
    log.out:close()
    log.out = io.stderr
    local text = proc.read(path)
    os.remove(path)
    assert.truthy(text:match('^%d+%-%d+%-%d+T[%d:.]+Z error request_id=req_%x+ event=failure model=openai/x '), text)
    assert.truthy(text:find('error_type=AuthenticationError error="', 1, true))
    assert.is_nil(text:find("sk-abcdefghijklmnopqrstuvwx", 1, true))
  end)

  it("reports a model's facts with their source and date", function()
    local cost = require "luagent.observe.cost"
    assert.truthy(cost.date:match("^%d%d%d%d%-%d%d%-%d%d$"))
    assert.truthy(#cost.source > 10)
    local i = llm.models.info("anthropic/claude-3-haiku-20240307")
    assert.are.equal("anthropic", i.provider)
    assert.are.equal(200000, i.context_window)
    assert.is_nil(llm.models.info("openai/none-such"))
  end)
end)
