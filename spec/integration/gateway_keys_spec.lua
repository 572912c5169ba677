-- The gateway's key management (LiteLLM's /key/generate, /key/update,
-- /key/info, /key/delete, /key/list) on a SQLite key store: scripts/gateway.lua as a
-- separate process, build/mockllm as its upstream, the official `openai`
-- npm SDK as the client of the keys it makes.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local json = require "luagent.json"
local gw = require "gateway_proc"

local MASTER = "sk-keys-master-8812"
local NODE = "node_modules/.bin/node"

-- A call of the key API: returns the status and the decoded body.
local function api(g, method, path, key, body)
  local r = assert(llm.http.request{ url = g.url .. path, method = method,
    headers = { ["content-type"] = "application/json", authorization = key and ("Bearer " .. key) or nil },
    body = body and json.encode(body) or nil })
  local text = r:body()
  r:close()
  return r.status, json.decode(text) or text
end

-- One chat completion through the official openai SDK with key: {ok=,
-- text=} or {ok=false, error=<the SDK's class>, status=}.
local function sdk_chat(g, key, model)
  local script = ([[
import OpenAI from "openai";
const c = new OpenAI({ baseURL: %q, apiKey: %q, maxRetries: 0 });
try {
  const r = await c.chat.completions.create({ model: %q, messages: [{ role: "user", content: "hi" }] });
  console.log(JSON.stringify({ ok: true, text: r.choices[0].message.content, usage: r.usage }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: e.constructor.name, status: e.status }));
}]]):format(g.url .. "/v1", key, model)
  -- (-e resolves "openai" from the working directory: the tree's node_modules)
  local r = assert(llm.exec({ NODE, "--input-type=module", "-e", script }, { timeout = 30 }))
  return json.decode(r.stdout) or { ok = false, error = "no output: " .. tostring(r.stderr) }
end

local function config(mock, db)
  return ([[
model_list:
  - model_name: house
    litellm_params: {model: openai/house-llm-7b, api_base: "%s/s/text=one%%20two%%20three/v1", api_key: os.environ/UPSTREAM_KEY}
    model_info: {input_cost_per_token: 0.0001, output_cost_per_token: 0.0002}
  - model_name: other
    litellm_params: {model: openai/other-llm, api_base: "%s/v1", api_key: os.environ/UPSTREAM_KEY}
general_settings:
  master_key: %s
  database_url: sqlite://%s
]]):format(mock.url, mock.url, MASTER, db)
end

describe("gateway key management on SQLite #integration", function()
  local mock, dir, db
  before_each(function()
    mock = servers.mock()
    dir = proc.tmpname("keys")
    os.execute("mkdir -p " .. dir)
    db = dir .. "/keys.db"
  end)
  after_each(function()
    mock.stop()
    os.execute("rm -rf " .. dir)
  end)

  it("makes a key the openai SDK can use, stores only its hash, and keeps it and its spending across a restart",
     function()
    local cfg = proc.tmpname("gw.yaml")
    proc.write(cfg, config(mock, db))
    local g = gw.start{ path = cfg }
    -- what one call costs at the deployment's prices ($100 a million
    -- tokens in, $200 out), from a call with the master key
    local ms, mt = gw.chat(g, MASTER, "house")
    assert.are.equal(200, ms, mt)
    local u = json.decode(mt).usage
    local cost = u.prompt_tokens * 0.0001 + u.completion_tokens * 0.0002
    -- room for the first call and part of a second
    local st, made = api(g, "POST", "/key/generate", MASTER,
                         { models = { "house" }, max_budget = 1.5 * cost, key_alias = "alice", metadata = { team = "ml" } })
    assert.are.equal(200, st, json.encode(made))
    local key = made.key
    assert.matches("^sk%-%x+$", key)
    assert.matches("^%x+$", made.token)
    assert.are.equal(64, #made.token)
    assert.are.same({ "house" }, made.models)
    assert.are.same({ team = "ml" }, made.metadata)

    local r = sdk_chat(g, key, "house")
    assert.is_true(r.ok, json.encode(r))
    assert.are.equal("one two three", r.text)
    assert.are.same(u, r.usage)
    local denied = sdk_chat(g, key, "other")
    assert.are.same({ ok = false, error = "PermissionDeniedError", status = 403 }, denied)

    -- a key reads its own info
    local ist, info = api(g, "GET", "/key/info", key)
    assert.are.equal(200, ist, json.encode(info))
    assert.are.equal(made.token, info.key)
    assert.near(cost, info.info.spend, 1e-9)
    assert.are.equal(u.total_tokens, info.info.spend_tokens)
    local logs = gw.stop(g)
    assert.is_nil(logs:find(key, 1, true), "the key appeared in the gateway's output")
    local file = assert(proc.read(db))
    assert.is_nil(file:find(key, 1, true), "the key file holds the key itself")

    -- a new process on the same file: the key works and its spending counts
    g = gw.start{ path = cfg }
    ist, info = api(g, "GET", "/key/info?key=" .. key, MASTER)
    assert.are.equal(200, ist)
    assert.near(cost, info.info.spend, 1e-9)
    local s1 = gw.chat(g, key, "house")
    assert.are.equal(200, s1)
    -- two calls' cost spent now, over the budget of one and a half
    local s2, t2 = gw.chat(g, key, "house")
    assert.are.equal(429, s2, t2)
    assert.matches("has used its budget", t2, 1, true)
    local lst, list = api(g, "GET", "/key/list", MASTER)
    assert.are.equal(200, lst)
    assert.are.same({ made.token }, list.keys)
    gw.stop(g)
    os.remove(cfg)
  end)

  it("refuses what it should: others than the master key, unknown fields, expired, updated and deleted keys",
     function()
    local g = gw.start{ text = config(mock, db) }
    local st, e = api(g, "POST", "/key/generate", "sk-not-the-master", {})
    assert.are.equal(401, st)
    assert.are.equal("authentication_error", e.error.type)
    st, e = api(g, "POST", "/key/generate", MASTER, { team_id = "t1", user_id = "u1" })
    assert.are.equal(400, st)
    assert.are.equal("not supported: team_id, user_id", e.error.message)
    st, e = api(g, "POST", "/key/generate", MASTER, { budget_duration = "monthly" })
    assert.are.equal(400, st)
    assert.matches("budget_duration must be like", e.error.message, 1, true)
    st, e = api(g, "POST", "/key/generate", MASTER, { models = "house" })
    assert.are.equal(400, st)
    assert.matches("models", e.error.message)
    st, e = api(g, "POST", "/key/generate", MASTER, { models = { "house", 7 } })
    assert.are.equal(400, st)
    assert.are.equal("models[1]: must be a model name", e.error.message)
    st, e = api(g, "POST", "/key/generate", MASTER, { 1, 2 })
    assert.are.equal(400, st)
    assert.are.equal("the request body must be a JSON object", e.error.message)
    st, e = api(g, "POST", "/key/generate", MASTER, { duration = "soon" })
    assert.are.equal(400, st)
    assert.matches("duration", e.error.message)

    local _, a = api(g, "POST", "/key/generate", MASTER, { key_alias = "a" })
    local _, b = api(g, "POST", "/key/generate", MASTER, { key = "sk-custom-key-42", key_alias = "b", duration = "1s" })
    assert.are.equal("sk-custom-key-42", b.key)
    st, e = api(g, "POST", "/key/generate", MASTER, { key_alias = "a" })
    assert.are.equal(400, st)
    assert.are.equal("the key_alias 'a' is taken", e.error.message)
    -- a key may not read another's info, nor manage keys
    assert.are.equal(403, (api(g, "GET", "/key/info?key=" .. b.key, a.key)))
    assert.are.equal(401, (api(g, "GET", "/key/list", a.key)))

    assert.are.equal(200, (gw.chat(g, b.key, "house")))
    llm.sleep(1.1)
    local xs, xt = gw.chat(g, b.key, "house")
    assert.are.equal(401, xs)
    assert.matches("The key 'b' has expired", xt, 1, true)

    assert.are.equal(200, (gw.chat(g, a.key, "other")))
    -- an update applies at once: a to "house" only, with a new alias
    st, e = api(g, "POST", "/key/update", MASTER, { key = a.key, models = { "house" }, key_alias = "a2" })
    assert.are.equal(200, st, json.encode(e))
    assert.are.same({ "house" }, e.models)
    assert.are.equal("a2", e.key_alias)
    assert.are.equal(403, (gw.chat(g, a.key, "other")))
    assert.are.equal(200, (gw.chat(g, a.key, "house")))
    assert.are.equal(400, (api(g, "POST", "/key/update", MASTER, { key = a.key, key_alias = "b" })))
    assert.are.equal(400, (api(g, "POST", "/key/update", MASTER, { key = a.key, user_id = "u" })))
    assert.are.equal(404, (api(g, "POST", "/key/update", MASTER, { key = "sk-never-made-2", rpm_limit = 1 })))
    st, e = api(g, "POST", "/key/delete", MASTER, { keys = { a.key, "sk-never-made-1" } })
    assert.are.equal(200, st, json.encode(e))
    assert.are.same({ a.key }, e.deleted_keys)
    assert.are.equal(401, (gw.chat(g, a.key, "other")))
    assert.are.equal(404, (api(g, "POST", "/key/delete", MASTER, { keys = { a.key } })))
    local _, list = api(g, "GET", "/key/list", MASTER)
    assert.are.equal(1, list.total_count)
    gw.stop(g)
  end)

  it("blocks and unblocks a key, gives a leaked one a new secret, and lists keys a page at a time", function()
    local g = gw.start{ text = config(mock, db) }
    local made = {}
    for i = 1, 3 do
      local _, m = api(g, "POST", "/key/generate", MASTER, { key_alias = "k" .. i })
      made[i] = m
    end
    local st, e = api(g, "POST", "/key/block", MASTER, { key = made[1].key })
    assert.are.equal(200, st, json.encode(e))
    assert.is_true(e.blocked)
    local bs, bt = gw.chat(g, made[1].key, "other")
    assert.are.equal(401, bs)
    assert.matches("The key 'k1' is blocked", bt, 1, true)
    assert.are.equal(200, (api(g, "POST", "/key/unblock", MASTER, { key = made[1].key })))
    assert.are.equal(200, (gw.chat(g, made[1].key, "other")))
    assert.are.equal(404, (api(g, "POST", "/key/block", MASTER, { key = "sk-never-made-3" })))

    -- a new secret: the old one is refused at once, the new one works, the settings stay
    local rs, fresh = api(g, "POST", "/key/" .. made[2].key .. "/regenerate", MASTER)
    assert.are.equal(200, rs, json.encode(fresh))
    assert.are_not.equal(made[2].key, fresh.key)
    assert.are.equal("k2", fresh.key_alias)
    assert.are.equal(401, (gw.chat(g, made[2].key, "other")))
    assert.are.equal(200, (gw.chat(g, fresh.key, "other")))
    local _, again = api(g, "POST", "/key/regenerate", MASTER, { key = fresh.key })
    assert.are.equal(200, (gw.chat(g, again.key, "other")))
    assert.are.equal(404, (api(g, "POST", "/key/regenerate", MASTER, { key = fresh.key })))

    local _, p1 = api(g, "GET", "/key/list?page=1&size=2", MASTER)
    local _, p2 = api(g, "GET", "/key/list?page=2&size=2&return_full_object=true", MASTER)
    assert.are.same({ 3, 2, 1, 2 }, { p1.total_count, p1.total_pages, p1.current_page, #p1.keys })
    assert.are.equal(1, #p2.keys)
    assert.are.equal("k3", p2.keys[1].key_alias)
    local _, one = api(g, "GET", "/key/list?key_alias=k1", MASTER)
    assert.are.same({ made[1].token }, one.keys)
    assert.are.equal(400, (api(g, "GET", "/key/list?size=1000", MASTER)))
    gw.stop(g)
  end)

  it("starts a key's budget again every budget_duration", function()
    local g = gw.start{ text = config(mock, db) }
    local _, mt = gw.chat(g, MASTER, "house")
    local u = json.decode(mt).usage
    local cost = u.prompt_tokens * 0.0001 + u.completion_tokens * 0.0002
    local _, made = api(g, "POST", "/key/generate", MASTER,
                        { max_budget = 1.5 * cost, budget_duration = "2s", models = { "house" } })
    assert.are.equal("2s", made.budget_duration)
    assert.truthy(made.budget_reset_at)
    local t0 = llm.now()
    assert.are.equal(200, (gw.chat(g, made.key, "house")))
    assert.are.equal(200, (gw.chat(g, made.key, "house")))
    local s3, t3 = gw.chat(g, made.key, "house")
    assert.are.equal(429, s3, t3)
    -- (the reset is due 2 s after the key was made, to the second)
    llm.sleep(math.max(0, 3.05 - (llm.now() - t0)))
    assert.are.equal(200, (gw.chat(g, made.key, "house")))
    local _, info = api(g, "GET", "/key/info", made.key)
    assert.near(cost, info.info.spend, 1e-9)
    gw.stop(g)
  end)

  it("lets a key made on one gateway work on another sharing the file, and adds up both one's spending", function()
    local cfg = proc.tmpname("gw.yaml")
    proc.write(cfg, config(mock, db))
    local g1, g2 = gw.start{ path = cfg }, gw.start{ path = cfg }
    local _, made = api(g1, "POST", "/key/generate", MASTER, {})     -- no budget: spending is counted all the same
    local s1, t1 = gw.chat(g1, made.key, "house")
    local s2, t2 = gw.chat(g2, made.key, "house")
    assert.are.equal(200, s1, t1)
    assert.are.equal(200, s2, t2)
    local u1, u2 = json.decode(t1).usage, json.decode(t2).usage
    local want = (u1.prompt_tokens + u2.prompt_tokens) * 0.0001 + (u1.completion_tokens + u2.completion_tokens) * 0.0002
    -- the rows are written behind the answers: wait for both to land
    local info
    for _ = 1, 50 do
      local _, r = api(g1, "GET", "/key/info?key=" .. made.key, MASTER)
      info = r.info
      if info.spend_tokens == u1.total_tokens + u2.total_tokens then break end
      llm.sleep(0.05)
    end
    assert.are.equal(u1.total_tokens + u2.total_tokens, info.spend_tokens)
    assert.near(want, info.spend, 1e-9)
    gw.stop(g1)
    gw.stop(g2)
    os.remove(cfg)
  end)

  it("names what is wrong with a database_url it cannot use", function()
    for _, case in ipairs{
      { "database_url: postgresql://u:p@db/litellm\n  master_key: " .. MASTER, "must be sqlite:///path" },
      { "database_url: sqlite://" .. dir .. "/k.db", "needs general_settings.master_key" },
    } do
      local cfg = proc.tmpname("gw.yaml")
      proc.write(cfg, ("model_list:\n  - model_name: m\n    litellm_params: {model: mock/m}\ngeneral_settings:\n  %s\n")
        :format(case[1]))
      local r = assert(llm.exec({ proc.bin, "scripts/gateway.lua", "--config", cfg, "--port", "0" }, { timeout = 10 }))
      os.remove(cfg)
      assert.are.equal(2, r.status, r.stderr)
      assert.matches(case[2], r.stderr, 1, true)
      assert.is_nil(r.stderr:find("u:p@", 1, true), "the database password appeared in the error")
    end
  end)
end)

describe("gateway limits on requests in flight #integration", function()
  it("holds a key to its max_parallel_requests and the gateway to global_max_parallel_requests", function()
    local mock = servers.mock()
    local dir = proc.tmpname("keys")
    os.execute("mkdir -p " .. dir)
    local slow = mock.url .. "/s/chunks=20,delay=25/v1"      -- half a second a stream
    local g = gw.start{ text = ([[
model_list:
  - model_name: slow
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s", api_key: os.environ/UPSTREAM_KEY}
general_settings:
  master_key: %s
  database_url: sqlite://%s/keys.db
  global_max_parallel_requests: 2
]]):format(slow, MASTER, dir) }
    local _, made = api(g, "POST", "/key/generate", MASTER, { max_parallel_requests = 1 })
    assert.are.equal(1, made.max_parallel_requests)
    local body = { model = "slow", messages = { { role = "user", content = "hi" } }, stream = true }
    -- one stream of the key's in flight: its second request is refused at once
    local statuses = {}
    local first = llm.spawn(function() statuses[1] = gw.chat(g, made.key, body) end)
    llm.sleep(0.15)
    local s2, t2, h2 = gw.chat(g, made.key, body)
    assert.are.equal(429, s2, t2)
    assert.matches("requests in flight", t2, 1, true)
    assert.are.equal("1", h2["retry-after"])
    -- the master key's stream makes two in flight: the gateway's cap
    local second = llm.spawn(function() statuses[2] = gw.chat(g, MASTER, body) end)
    llm.sleep(0.15)
    local s3, t3 = gw.chat(g, MASTER, body)
    assert.are.equal(429, s3, t3)
    assert.matches("limit of 2 requests in flight", t3, 1, true)
    first:wait()
    second:wait()
    assert.are.same({ 200, 200 }, statuses)
    -- both slots are free again
    assert.are.equal(200, (gw.chat(g, made.key, body)))
    gw.stop(g)
    mock.stop()
    os.execute("rm -rf " .. dir)
  end)
end)
