-- The HTTP transport (llm.http.request) against a real loopback server that
-- cuts, stalls, drips and corrupts (build/mockllm in its own process).
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local canonical = require "canonical"
local cjson = require "cjson"

local OPENAI_BODY = '{"model":"gpt-t","stream":true,"messages":[]}'

describe("http transport #integration", function()
  local mock

  setup(function() mock = servers.mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  -- A streaming OpenAI-format request on a scenario.
  local function stream(scenario, opts)
    local o = {
      url = mock.url .. "/s/" .. scenario .. "/v1/chat/completions",
      method = "POST", body = OPENAI_BODY, stream = true,
      headers = { ["content-type"] = "application/json" },
    }
    for k, v in pairs(opts or {}) do o[k] = v end
    return llm.http.request(o)
  end

  local read_all = proc.read_all

  it("delivers status, headers and every SSE event in order", function()
    local resp = assert(stream("chunks=20,delay=1"))
    assert.are.equal(200, resp.status)
    assert.matches("text/event%-stream", resp.headers["content-type"])
    assert.is_true(resp.framed)
    local events, err = read_all(resp)
    assert.is_nil(err)
    assert.are.equal("[DONE]", events[#events])
    local text = {}
    for i = 1, #events - 1 do
      local c = cjson.decode(events[i])
      local d = c.choices[1] and c.choices[1].delta
      if d and type(d.content) == "string" then text[#text + 1] = d.content end
    end
    assert.matches("^t0 t1 t2 .* t19 $", table.concat(text))
    resp:close()
  end)

  it("returns a whole non-stream body", function()
    local resp = assert(llm.http.request{ url = mock.url .. "/v1/chat/completions",
                                          body = '{"model":"m"}' })
    assert.are.equal(200, resp.status)
    local body = assert(resp:body())
    assert.are.equal("Hello from the mock server.", cjson.decode(body).choices[1].message.content)
  end)

  it("delivers 2,000 events sent in one write", function()
    local resp = assert(stream("burst=2000"))
    local events, err = read_all(resp)
    assert.is_nil(err)
    local n = 0
    for _, e in ipairs(events) do if e:find('"content":"t', 1, true) then n = n + 1 end end
    assert.are.equal(2000, n)
  end)

  it("keeps every event, in order, for a reader slower than the server", function()
    local resp = assert(stream("burst=30000"))
    local n, last = 0, -1
    while true do
      local data, err = resp:read()
      assert.is_nil(err)
      if not data then break end
      local k = data:match('"content":"t(%d+) ')
      if k then
        k = tonumber(k)
        assert.are.equal(last + 1, k)
        last, n = k, n + 1
        if n % 5000 == 0 then llm.sleep(0.02) end   -- fall behind: the transfer pauses
      end
    end
    assert.are.equal(30000, n)
  end)

  it("passes invalid UTF-8 through without crashing", function()
    local resp = assert(stream("badutf8=1"))
    local events, err = read_all(resp)
    assert.is_nil(err)
    assert.is_true(#events > 3)
  end)

  it("aborts an event past max_event with a clear error and bounded memory", function()
    local resp = assert(stream("big=67108864"))
    local _, err = read_all(resp)
    assert.are.equal("APIError", err.type)
    assert.matches("larger than max_event %(8388608 bytes%)", err.message)
  end)

  it("delivers a 64 MiB event when max_event allows it", function()
    local resp = assert(stream("big=67108864", { max_event = 128 * 1024 * 1024 }))
    local events, err = read_all(resp)
    assert.is_nil(err)
    local biggest = 0
    for _, e in ipairs(events) do biggest = math.max(biggest, #e) end
    assert.is_true(biggest > 64 * 1024 * 1024)
  end)

  it("reads through a receive buffer smaller than its events, whole and in order", function()
    local resp = assert(stream("big=100000", { buffer_size = 1024 }))
    local events, err = read_all(resp)
    assert.is_nil(err)
    local biggest = 0
    for _, e in ipairs(events) do biggest = math.max(biggest, #e) end
    assert.is_true(biggest > 100000)
    assert.are.equal("[DONE]", events[#events])
    resp = assert(stream("burst=2000", { buffer_size = 1024 }))
    local n = 0
    for _, e in ipairs((read_all(resp))) do
      if e:find('"content":"t' .. n .. ' ', 1, true) then n = n + 1 end
    end
    assert.are.equal(2000, n)
    resp = assert(llm.http.request{ url = mock.url .. "/v1/chat/completions",
                                    body = '{"model":"m"}', buffer_size = 1024 })
    local body = assert(resp:body())
    assert.are.equal("Hello from the mock server.", cjson.decode(body).choices[1].message.content)
  end)

  it("refuses a buffer_size outside libcurl's bounds, or a negative cap, by name", function()
    for _, bad in ipairs({ 1023, 512 * 1024 + 1, "big", 2048.5 }) do
      local ok, err = pcall(stream, "chunks=1", { buffer_size = bad })
      assert.is_false(ok)
      assert.matches("buffer_size must be an integer from 1024 to 524288", tostring(err))
    end
    for _, k in ipairs({ "max_event", "max_body" }) do
      local ok, err = pcall(stream, "chunks=1", { [k] = -1 })
      assert.is_false(ok)
      assert.matches(k .. " must be an integer from 0 to", tostring(err))
    end
  end)

  it("names the first_event timeout when headers come and then nothing", function()
    local t0 = llm.now()
    local resp = assert(stream("stall=headers", { first_event_timeout = 0.2 }))
    local _, err = read_all(resp)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("first_event", err.timeout)
    assert.matches("first_event timeout", tostring(err))
    assert.is_true(llm.now() - t0 < 2)
  end)

  it("names the first_event timeout when the server never answers", function()
    local resp, err = stream("stall=before", { first_event_timeout = 0.2 })
    assert.is_nil(resp)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("first_event", err.timeout)
  end)

  it("names the idle timeout when the stream stops between events", function()
    local resp = assert(stream("stall_after=3", { idle_timeout = 0.2 }))
    local events, err = read_all(resp)
    assert.are.equal(3, #events)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("idle", err.timeout)
  end)

  it("keep-alive comments do not reset the idle timeout", function()
    local resp = assert(stream("comments=50,drip=5", { idle_timeout = 0.2, timeout = 5 }))
    local _, err = read_all(resp)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("idle", err.timeout)
  end)

  it("the total deadline stops a server dripping one byte at a time", function()
    local resp = assert(stream("drip=10", { timeout = 0.4 }))
    local _, err = read_all(resp)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("total", err.timeout)
  end)

  it("does not kill a healthy slow stream with default timeouts", function()
    local resp = assert(stream("chunks=3,delay=300"))
    local events, err = read_all(resp)
    assert.is_nil(err)
    assert.are.equal("[DONE]", events[#events])
  end)

  it("reports a connection cut mid-event after the events before it", function()
    local resp = assert(stream("chunks=10,cut_after=4"))
    local events, err = read_all(resp)
    assert.are.equal(4, #events)
    assert.are.equal("APIConnectionError", err.type)
  end)

  it("reports a refused connection as APIConnectionError", function()
    local resp, err = llm.http.request{ url = "http://127.0.0.1:1/x" }
    assert.is_nil(resp)
    assert.are.equal("APIConnectionError", err.type)
  end)

  it("hands a proxy's HTML 502 page over as a body, not as an empty stream", function()
    local resp = assert(stream("html502=1"))
    assert.are.equal(502, resp.status)
    assert.is_false(resp.framed)
    assert.matches("<html", assert(resp:body()))
  end)

  it("hands a JSON error under status 200 over as a body", function()
    local resp = assert(stream("body=json_error"))
    assert.are.equal(200, resp.status)
    assert.is_false(resp.framed)
    assert.matches('"error"', assert(resp:body()))
  end)

  it("reconnects when the server closes idle keep-alive connections", function()
    for _ = 1, 5 do
      local resp = assert(stream("close=1,chunks=2"))
      local events, err = read_all(resp)
      assert.is_nil(err)
      assert.are.equal("[DONE]", events[#events])
    end
  end)

  it("reuses one connection for sequential requests (keep-alive)", function()
    local before = #mock.requests()
    for _ = 1, 3 do
      local resp = assert(stream("chunks=2"))
      read_all(resp)
    end
    assert.are.equal(before + 3, #mock.requests())
  end)

  it("cancelling the reading task ends the transfer at once", function()
    local t = llm.spawn(function()
      local resp = assert(stream("stall=headers"))
      return resp:read()
    end)
    llm.sleep(0.05)
    assert.are.equal(1, llm.debug().transfers)
    t:cancel()
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("Cancelled", err.type)
  end)

  it("<close> and close() end the transfer; a second close is harmless", function()
    do
      local resp <close> = assert(stream("stall_after=1"))
      assert.is_truthy(resp:read())
    end
    local resp = assert(stream("stall_after=1"))
    resp:close()
    resp:close()
    local data, err = resp:read()
    assert.is_nil(data)
    assert.are.equal("Cancelled", err.type)
  end)

  it("garbage collection of an abandoned response ends its transfer", function()
    local resp = assert(stream("stall_after=1"))
    resp:read()
    resp = nil
    collectgarbage()
    collectgarbage()
    assert.are.equal(0, llm.debug().transfers)
  end)

  it("refuses header names or values with CR, LF or NUL", function()
    assert.has_error(function()
      llm.http.request{ url = mock.url .. "/health", headers = { ["x-a"] = "v\r\nInjected: 1" } }
    end)
    assert.has_error(function()
      llm.http.request{ url = mock.url .. "/health", headers = { ["x-a\n"] = "v" } }
    end)
    assert.has_error(function()
      llm.http.request{ url = mock.url .. "/health", headers = { ["x-a"] = "v\0w" } }
    end)
  end)

  it("allows only http and https", function()
    assert.has_error(function() llm.http.request{ url = "file:///etc/passwd" } end,
      "http.request: only http:// and https:// URLs")
    assert.has_error(function() llm.http.request{ url = "ftp://127.0.0.1/" } end)
  end)

  it("does not follow redirects unless asked", function()
    -- mockllm answers unknown paths with 404: a redirect-free server; the
    -- option is still validated here.
    local resp = assert(llm.http.request{ url = mock.url .. "/nope" })
    assert.are.equal(404, resp.status)
    resp:close()
  end)

  it("runs 200 concurrent streams on one loop", function()
    local out = llm.map({}, function() end)
    assert.are.equal(0, #out)
    local n = 200
    local list = {}
    for i = 1, n do list[i] = i end
    local got = llm.map(list, function()
      local resp = assert(stream("chunks=10,delay=5"))
      local events, err = read_all(resp)
      assert(err == nil, tostring(err))
      return #events
    end, { concurrency = n })
    for i = 1, n do assert.are.equal(got[1], got[i]) end
    assert.is_true(got[1] >= 12)
  end)
end)

describe("http transport secrets #integration", function()
  it("no key from the URL or the headers appears in a transport error", function()
    local canary = "sk-canary-http-5d2e8f"
    local resp, err = llm.http.request{
      url = "http://127.0.0.1:1/v1/x?key=" .. canary,
      headers = { authorization = "Bearer " .. canary, ["x-api-key"] = canary },
    }
    assert.is_nil(resp)
    local text = tostring(err) .. " " .. tostring(err.message)
    for k, v in pairs(err) do text = text .. " " .. tostring(k) .. "=" .. tostring(v) end
    assert.is_nil(text:find(canary, 1, true), text)
    assert.is_nil(text:find("5d2e8f", 1, true), text)
  end)
end)

describe("resp:read_json #integration", function()
  local mock
  local json = require "luagent.json"

  setup(function() mock = servers.mock("--fixtures spec/fixtures/http") end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  local function open(scenario)
    return assert(llm.http.request{ url = mock.url .. "/s/" .. scenario .. "/v1/chat/completions",
                                    method = "POST", body = OPENAI_BODY, stream = true })
  end

  it("decodes objects and arrays in C, hands every other event over as its string", function()
    local resp = open("fixture=read_json.sse")
    local v, event, id = resp:read_json(json.array_mt)
    assert.are.equal("a", v.id)
    assert.are.equal("hi é", v.choices[1].delta.content)
    assert.is_nil(v.choices[1].finish_reason)          -- null is absent
    assert.is_nil(v.usage)
    assert.is_nil(rawget(v, "usage"))
    assert.is_nil(event); assert.is_nil(id)
    v, event, id = resp:read_json(json.array_mt)
    assert.are.equal("custom", event)
    assert.are.equal("7", id)
    assert.are.equal(1, v[1]); assert.are.equal(2.5, v[2])
    assert.are.equal(json.array_mt, getmetatable(v[3]))  -- [] stays an array
    assert.are.equal(json.array_mt, getmetatable(v[4].k))
    assert.are.equal("[1,2.5,[],{\"k\":[]}]", json.encode(v))
    assert.is_true(resp:read_json(json.array_mt).spaced)
    -- invalid JSON and non-containers come back as the data, untouched
    assert.are.equal('{"broken": ', resp:read_json(json.array_mt))
    assert.are.equal("null", resp:read_json())
    assert.are.equal("[DONE]", resp:read_json())
    assert.is_nil(resp:read_json())
    resp:close()
  end)

  it("gives the same values as resp:read and json.decode on a real stream", function()
    local a, b = open("chunks=50,burst=50,usage=1,tag=a"), open("chunks=50,burst=50,usage=1,tag=b")
    local n = 0
    while true do
      local s = a:read()
      local v = b:read_json(json.array_mt)
      if s == nil then assert.is_nil(v); break end
      n = n + 1
      if s == "[DONE]" then
        assert.are.equal("[DONE]", v)
      else
        local want = json.decode(s)
        want.id, v.id = nil, nil                       -- the ids of two streams differ
        want.created, v.created = nil, nil
        assert.are.same(want, v)
        assert.are.equal(canonical(want), canonical(v))   -- array marks too
      end
    end
    assert.are.equal(54, n)
    a:close(); b:close()
  end)

  it("refuses a metatable that is not a table", function()
    local resp = open("chunks=1")
    assert.has_error(function() resp:read_json(42) end)
    resp:close()
  end)
end)

describe("resp:read_relay #integration", function()
  local mock

  setup(function() mock = servers.mock("--fixtures spec/fixtures/http") end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  -- The fixture's stream, every event of it queued (it comes at once).
  local function open()
    local resp = assert(llm.http.request{ url = mock.url .. "/s/fixture=relay.sse/v1/chat/completions",
                                          method = "POST", body = OPENAI_BODY, stream = true })
    llm.sleep(0.2)
    return resp
  end

  it("hands the plain events over as one string of SSE text and decodes the next one", function()
    local resp = open()
    -- inspecting: the first event alone, decoded, with its text
    local plain, data, event, raw = resp:read_relay(nil, true)
    assert.are.equal("", plain)
    assert.are.equal("assistant", data.choices[1].delta.role)
    assert.is_nil(event)
    assert.matches('^data: {"id":"r","choices":%[{"index":0,"delta":{"role":"assistant","content":""}}%]}\n\n$', raw)
    -- two plain events (the second's data on two lines, as it came), then
    -- a named one: not plain
    plain, data, event, raw = resp:read_relay(nil, false)
    assert.are.equal('data: {"id":"r","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
      .. 'data: {"id":"r",\ndata: "choices":[{"index":0,"delta":{"content":"b"}}]}\n\n', plain)
    assert.are.equal(1, data.x)
    assert.are.equal("custom", event)
    assert.are.equal('event: custom\nid: 9\ndata: {"x":1}\n\n', raw)
    -- a null usage is plain; a finish is not
    plain, data, event, raw = resp:read_relay(nil, false)
    assert.are.equal('data: {"id":"r","choices":[{"index":0,"delta":{"content":"c"}}],"usage":null}\n\n', plain)
    assert.are.equal("stop", data.choices[1].finish_reason)
    assert.are.equal('data: {"id":"r","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n', raw)
    -- data that is not JSON comes as its string
    plain, data, event, raw = resp:read_relay(nil, false)
    assert.are.equal("", plain)
    assert.are.equal("[DONE]", data)
    assert.are.equal("data: [DONE]\n\n", raw)
    assert.is_nil(resp:read_relay(nil, false))
    resp:close()
  end)

  it("takes only events of the plain event name as plain", function()
    local resp = open()
    local plain, data = resp:read_relay(nil, false, "custom")
    assert.are.equal("", plain)                        -- an unnamed event is not plain here
    assert.are.equal("assistant", data.choices[1].delta.role)
    for _ = 1, 2 do assert.are.equal("", (resp:read_relay(nil, false, "custom"))) end
    plain, data = resp:read_relay(nil, false, "custom")
    assert.are.equal('event: custom\nid: 9\ndata: {"x":1}\n\n', plain)
    assert.are.equal("c", data.choices[1].delta.content)
    resp:close()
  end)

  it("refuses a stream that is not SSE", function()
    local resp = assert(llm.http.request{ url = mock.url .. "/s/fixture=relay.sse/v1/chat/completions",
                                          method = "POST", body = OPENAI_BODY, stream = true, framing = "ndjson" })
    assert.has_error(function() resp:read_relay(nil, false) end, "resp:read_relay: not an SSE stream")
    resp:close()
  end)
end)
