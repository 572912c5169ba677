-- The encoders of every provider (luagent.Provider: encoder, encode_response)
-- against its own decoder: OpenAI-shaped chunks encoded into the provider's
-- wire format, framed by the real C framer and decoded again give back the
-- same chunks (tool calls and usage included); a chat.completion encoded as
-- the provider's body and parsed again gives back the same response.
local llm = require "luagent"
local json = require "luagent.json"
local chunks = require "luagent.chunks"
local canonical = require "canonical"
local sse_split = require "sse_split"
local providers = require "luagent.providers"
local mock = require "luagent.providers.mock"

local OPTS = { id = "chatcmpl-fixed", created = 1 }

-- A chunk list as canonical text, tool-call arguments compared as JSON
-- values (an encoder sends objects for them, re-encoded by the decoder).
local function canonical_chunks(list)
  local out = {}
  for i, c in ipairs(list) do
    local copy = json.decode(json.encode(c))
    for _, ch in ipairs(copy.choices or {}) do
      for _, tc in ipairs(ch.delta and ch.delta.tool_calls or {}) do
        local fn = tc["function"]
        local v = fn and type(fn.arguments) == "string" and fn.arguments ~= "" and json.decode(fn.arguments)
        if v then fn.arguments = canonical(v) end
      end
    end
    out[i] = canonical(copy)
  end
  return table.concat(out, "\n")
end

-- The bytes of a chunk list encoded by P's stream encoder.
local function encode(P, list)
  local enc, out = P.encoder(), {}
  for _, c in ipairs(list) do out[#out + 1] = enc:chunk(c) end
  out[#out + 1] = enc:finish()
  return table.concat(out)
end

-- The chunks of P's stream bytes: the C framer, then P's decoder; the
-- decoder must find the stream complete.
local function decode(P, bytes, model)
  local f, dec, out = llm.http.framer(P.framing), P.decoder(model or "m", OPTS), {}
  local events = assert(f:feed(bytes))
  for _, e in ipairs(f:finish()) do events[#events + 1] = e end
  for _, e in ipairs(events) do
    local c, err = dec:feed(e.event, e.data)
    assert(c ~= nil, err and err.message)
    if c then out[#out + 1] = c end
  end
  assert(dec:finish())
  return out
end

-- The response of a chunk list, tool-call arguments as JSON values.
local function assembled(list)
  local r = chunks.build(list)
  for _, ch in ipairs(r.choices) do
    for _, tc in ipairs(ch.message.tool_calls or {}) do
      tc["function"].arguments = json.decode(tc["function"].arguments)
    end
  end
  return r
end

local STREAMS = {
  openai = { "openai/stream_text.sse", "openai/stream_tools.sse" },
  anthropic = { "anthropic/stream_text.sse", "anthropic/stream_tools.sse", "anthropic/stream_unknown.sse" },
  ollama = { "ollama/stream_text.ndjson", "ollama/stream_tools.ndjson", "ollama/stream_length.ndjson" },
  gemini = { "gemini/stream_text.sse", "gemini/stream_tools.sse", "gemini/stream_safety.sse" },
}

describe("provider encoders #unit", function()
  for _, name in ipairs({ "openai", "anthropic", "ollama", "gemini" }) do
    local P = providers.get(name)

    describe(name, function()
      -- decode -> encode -> frame -> decode is the identity on what the
      -- decoder gives: every recorded stream
      for _, fixture in ipairs(STREAMS[name]) do
        it("gives back the chunks of " .. fixture, function()
          local list, err = sse_split.decode_fixture(P, fixture, "m", OPTS)
          assert.is_nil(err)
          assert.is_true(#list >= 1)
          local bytes = encode(P, list)
          assert.are.equal(canonical_chunks(list), canonical_chunks(decode(P, bytes)))
        end)
      end

      -- An OpenAI-shaped stream (the mock's: role, words, tool calls in
      -- fragments, finish with usage) and the same with OpenAI's
      -- include_usage split (the usage in a chunk of its own after the
      -- finish): the decoded stream assembles to the same response.
      for _, split_usage in ipairs({ false, true }) do
        it("carries an OpenAI stream's text, tool calls and usage" .. (split_usage and ", usage after the finish" or ""), function()
          local plan = assert(mock.plan({ mock_response = "Hi there, friend", messages = { { role = "user", content = "x" } },
            mock_tool_calls = { { name = "get_weather", id = "call_1", arguments = { city = "Oslo", days = { 1, 2 } } },
                                { name = "now", id = "call_2", arguments = {} } } }, "m"))
          plan.finish_reason = "tool_calls"
          local list = mock.chunks(plan, "m", OPTS.id, OPTS.created)
          if split_usage then
            local last = list[#list]
            local usage = last.usage
            last.usage = nil
            list[#list + 1] = chunks.usage_chunk(OPTS.id, "m", OPTS.created, usage)
          end
          local want, got = assembled(list), assembled(decode(P, encode(P, list)))
          assert.are.equal("Hi there, friend", got.choices[1].message.content)
          assert.are.same(want.choices[1].message.tool_calls, got.choices[1].message.tool_calls)
          assert.are.equal("tool_calls", got.choices[1].finish_reason)
          assert.are.same({ want.usage.prompt_tokens, want.usage.completion_tokens, want.usage.total_tokens },
                          { got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.total_tokens })
        end)
      end

      it("carries reasoning and a length finish", function()
        local c = function(delta, finish, usage) return chunks.chunk(OPTS.id, "m", 1, delta, finish, usage) end
        local list = { c { role = "assistant", content = "" }, c { reasoning_content = "think" },
                       c { content = "answer" }, c({}, "length", chunks.usage(3, 4)) }
        local got = assembled(decode(P, encode(P, list)))
        local m = got.choices[1].message
        assert.are.same({ "think", "answer", "length", 3, 4 },
          { m.reasoning_content, m.content, got.choices[1].finish_reason, got.usage.prompt_tokens, got.usage.completion_tokens })
      end)

      it("encodes a response that parse_response reads back", function()
        local resp = chunks.build(mock.chunks(assert(mock.plan({ mock_response = "All done.", mock_tool_calls = {
          { name = "f", id = "call_9", arguments = { a = { 1, "two" } } } } }, "m")), "m", "chatcmpl-9", 5))
        resp.choices[1].finish_reason = "tool_calls"
        local body = P.encode_response(resp)
        assert.is_string(body)
        local back = assert(P.parse_response(200, body, "m"))
        local want, got = resp.choices[1].message, back.choices[1].message
        assert.are.equal(want.content, got.content)
        assert.are.equal("tool_calls", back.choices[1].finish_reason)
        assert.are.same({ "call_9", "f", { a = { 1, "two" } } }, { got.tool_calls[1].id,
          got.tool_calls[1]["function"].name, json.decode(got.tool_calls[1]["function"].arguments) })
        assert.are.same({ resp.usage.prompt_tokens, resp.usage.completion_tokens },
                        { back.usage.prompt_tokens, back.usage.completion_tokens })
      end)
    end)
  end

  it("gemini keeps several candidates apart, a choice each", function()
    local P = providers.get("gemini")
    local c = chunks.chunk(OPTS.id, "m", 1, { role = "assistant", content = "a" })
    c.choices[2] = { index = 1, delta = { role = "assistant", content = "b" } }
    local last = chunks.chunk(OPTS.id, "m", 1, {}, "stop", chunks.usage(1, 2))
    last.choices[2] = { index = 1, delta = {}, finish_reason = "length" }
    local got = assembled(decode(P, encode(P, { c, last })))
    assert.are.same({ "a", "stop", "b", "length" }, { got.choices[1].message.content, got.choices[1].finish_reason,
                                                      got.choices[2].message.content, got.choices[2].finish_reason })
  end)
end)
