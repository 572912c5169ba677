-- The gateway's response cache from a LiteLLM config (litellm_settings
-- cache and cache_params): scripts/gateway.lua as separate processes,
-- build/mockllm as the upstream (its per-scenario request count tells a
-- hit from a miss), a real redis-server for the shared cache.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local json = require "luagent.json"
local gw = require "gateway_proc"

local MASTER = "sk-cache-master-3307"

local function config(api_base, cache)
  return ([[
model_list:
  - model_name: cached
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s", api_key: os.environ/UPSTREAM_KEY}
litellm_settings:
  cache: true
  cache_params: %s
general_settings:
  master_key: %s
]]):format(api_base, cache, MASTER)
end

-- A chat completion: the answer's text (streamed or not) and status.
local function ask(g, text, extra)
  local body = { model = "cached", messages = { { role = "user", content = text } } }
  for k, v in pairs(extra or {}) do body[k] = v end
  local status, out = gw.chat(g, MASTER, body)
  if status ~= 200 then return nil, status, out end
  if body.stream then
    local acc = {}
    for data in out:gmatch("data: ([^\n]+)") do
      local c = data ~= "[DONE]" and json.decode(data)
      local d = c and c.choices and c.choices[1] and c.choices[1].delta
      if d and d.content then acc[#acc + 1] = d.content end
    end
    return table.concat(acc), status
  end
  return json.decode(out).choices[1].message.content, status
end

describe("gateway response cache from litellm_settings #integration", function()
  local mock, dir
  before_each(function()
    mock = servers.mock()
    dir = proc.tmpname("cache")
  end)
  after_each(function()
    mock.stop()
    os.execute("rm -rf " .. dir)
  end)

  it("answers a repeated request from a disk cache, streamed or not, and honours no-cache and no-store", function()
    local scen = mock.scenario("text=remembered")
    local g = gw.start{ text = config(mock.url .. "/s/" .. scen .. "/v1",
                                      ("{type: disk, disk_cache_dir: %s, ttl: 600}"):format(dir)) }
    assert.are.equal("remembered", ask(g, "q1"))
    assert.are.equal("remembered", ask(g, "q1"))
    assert.are.equal("remembered", ask(g, "q1", { stream = true }))    -- a hit replays as a stream
    assert.are.equal(1, mock.count(scen))
    assert.are.equal("remembered", ask(g, "q1", { cache = { ["no-cache"] = true } }))
    assert.are.equal(2, mock.count(scen))
    ask(g, "q2", { cache = { ["no-store"] = true } })
    ask(g, "q2")
    assert.are.equal(4, mock.count(scen))
    -- a client's malformed controls are ignored, never an error
    assert.are.equal("remembered", ask(g, "q1", { cache = "please" }))
    assert.are.equal(4, mock.count(scen))
    gw.stop(g)
    assert.truthy(proc.read(dir .. "/gateway-cache.db"), "no cache file in disk_cache_dir")
  end)

  it("shares a Redis cache between two gateway processes, its password from the environment", function()
    local PASS = "c4che/p@ss"
    local redis = servers.redis{ password = PASS }
    local scen = mock.scenario("text=shared")
    local text = config(mock.url .. "/s/" .. scen .. "/v1",
      ("{type: redis, host: 127.0.0.1, port: %d, password: os.environ/CACHE_PASS, namespace: gw-spec}"):format(redis.port))
    local a = gw.start{ text = text, env = { CACHE_PASS = PASS } }
    local b = gw.start{ text = text, env = { CACHE_PASS = PASS } }
    assert.are.equal("shared", ask(a, "same question"))
    assert.are.equal("shared", ask(b, "same question"))
    assert.are.equal(1, mock.count(scen))
    for _, g in ipairs{ a, b } do
      assert.is_nil(gw.stop(g):find(PASS, 1, true), "the Redis password appeared in a gateway's output")
    end
    redis.stop()
  end)

  it("warns of a cache type it does not keep, and of cache_params it does not act on", function()
    local g = gw.start{ text = config(mock.url .. "/v1", "{type: s3, s3_bucket_name: b, mode: default_off}") }
    local logs = gw.stop(g)
    assert.matches("litellm_settings.cache_params.mode", logs, 1, true)
    assert.matches("litellm_settings.cache_params.s3_bucket_name", logs, 1, true)
    assert.matches("litellm_settings.cache_params.type s3 (only redis and disk: no cache)", logs, 1, true)
  end)
end)
