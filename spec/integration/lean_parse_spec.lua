-- The lean client's response parser (runtime/hresp.c) on responses a real
-- loopback server (build/mockllm, raw=NAME: the file's bytes as they are)
-- sends: the cases fuzz/fuzz_hresp.c found wrong.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"

describe("the lean client's response parser #integration", function()
  local mock, dir

  setup(function() mock, dir = servers.fixture_mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  -- llm.http.request on the lean client for the response in file name.
  local function lean(name, bytes)
    proc.write(dir .. "/" .. name, bytes)
    return llm.http.request { url = mock.url .. "/s/" .. mock.scenario("raw=" .. name) ..
                              "/v1/chat/completions", method = "POST", transport = "lean",
                              body = '{"model":"m","messages":[]}' }
  end

  it("calls a status below 100 a malformed head", function()
    -- picohttpparser takes any three digits: this came back as status 20
    local resp, err = lean("status020", "HTTP/1.1 020 OK\r\nContent-Length: 2\r\n\r\nok")
    assert.is_nil(resp, resp and ("status " .. tostring(resp.status)))
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("status below 100", err.message)
  end)

  it("takes a head near the limit whatever the reads carry after it", function()
    -- a 48 KB interim 103, then 250 KB of head (under the 256 KB limit) and
    -- 64 KB of body: the limit once bounded the bytes buffered, so the body
    -- bytes of the read the head ends in tipped it ("response headers too
    -- large"), or not, as the reads fell
    local body = ("0123456789abcdef"):rep(4096)
    local resp, err = lean("bighead", "HTTP/1.1 103 Early Hints\r\nLink: " .. ("b"):rep(48 * 1024) ..
                                      "\r\n\r\nHTTP/1.1 200 OK\r\nX-Big: " .. ("a"):rep(250 * 1024) ..
                                      "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
    assert.is_nil(err and err.message)
    assert.are.equal(200, resp.status)
    assert.are.equal(#body, #resp:body())
    assert.are.equal(body, resp:body())
    resp:close()
  end)
  it("frames a body as chunked only when chunked is the last coding", function()
    -- "gzip, chunked": chunked last, decoded (the gzip is the caller's)
    local chunks = "5\r\nhello\r\n0\r\n\r\n"
    local resp, err = lean("te_last", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" .. chunks)
    assert.is_nil(err and err.message)
    assert.are.equal("hello", resp:body())
    resp:close()
    -- "chunked, br": the body runs to the close, its bytes as they came
    -- (RFC 9112 6.3); it was de-chunked into "hello"
    resp, err = lean("te_not_last", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, br\r\n" ..
                                    "Connection: close\r\n\r\n" .. chunks)
    assert.is_nil(err and err.message)
    assert.are.equal(chunks, resp:body())
    resp:close()
  end)
end)
