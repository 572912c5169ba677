-- Every recorded provider stream, framed by the real C framer and decoded by
-- its provider, gives exactly the same chunks however the bytes are split:
-- at every single offset, and at pairs of offsets (strided).
local llm = require "luagent"
local canonical = require "canonical"
local sse_split = require "sse_split"
local providers = require "luagent.providers"

local FIXTURES = {
  { "openai", "openai/stream_text.sse" }, { "openai", "openai/stream_tools.sse" },
  { "openai", "openai/stream_error.sse" }, { "openai", "openai/stream_truncated.sse" },
  { "anthropic", "anthropic/stream_text.sse" }, { "anthropic", "anthropic/stream_tools.sse" },
  { "anthropic", "anthropic/stream_overloaded.sse" }, { "anthropic", "anthropic/stream_unknown.sse" },
  { "ollama", "ollama/stream_text.ndjson" }, { "ollama", "ollama/stream_tools.ndjson" },
  { "ollama", "ollama/stream_length.ndjson" }, { "ollama", "ollama/stream_error.ndjson" },
  { "gemini", "gemini/stream_text.sse" }, { "gemini", "gemini/stream_tools.sse" },
  { "gemini", "gemini/stream_safety.sse" }, { "gemini", "gemini/stream_error.sse" },
}

-- Frames and decodes `parts` in order; returns a canonical string of
-- everything the script would see (chunks with their keys sorted, the
-- error type, incomplete).
local function replay(P, parts)
  local f = llm.http.framer(P.framing)
  local dec = P.decoder("m", { id = "fixed", created = 1 })
  local out = {}
  local function take(events)
    for _, ev in ipairs(events) do
      local c, err = dec:feed(ev.event, ev.data)
      if c == nil then out[#out + 1] = "error:" .. tostring(err.type); return false end
      if c then
        -- ollama and gemini send no tool-call ids: the decoder makes random ones
        out[#out + 1] = (canonical(c):gsub('"call_%w+"', '"call_generated"'))
      end
    end
    return true
  end
  for _, part in ipairs(parts) do
    if not take(assert(f:feed(part))) then return table.concat(out, "\n") end
  end
  local events, tail = f:finish()
  if take(events) then
    local ok, err = dec:finish()
    out[#out + 1] = ok and "end" or ("end:" .. err.type)
  end
  out[#out + 1] = tostring(tail)
  return table.concat(out, "\n")
end

describe("stream replay at every byte boundary #unit", function()
  for _, fx in ipairs(FIXTURES) do
    local prov, name = fx[1], fx[2]
    it(name, function()
      local P = providers.get(prov)
      local body = sse_split.read(name)
      local whole = replay(P, { body })
      assert.is_true(#whole > 10)
      for i = 1, #body - 1 do
        local got = replay(P, { body:sub(1, i), body:sub(i + 1) })
        if got ~= whole then
          assert.are.equal(whole, got, "split at byte " .. i)
        end
      end
      local stride = math.max(1, #body // 40)
      for i = 1, #body - 2, stride do
        for j = i + 1, #body - 1, stride do
          local got = replay(P, { body:sub(1, i), body:sub(i + 1, j), body:sub(j + 1) })
          if got ~= whole then
            assert.are.equal(whole, got, ("split at bytes %d and %d"):format(i, j))
          end
        end
      end
    end)
  end

  it("the C framer and the test splitter agree on every fixture", function()
    for _, fx in ipairs(FIXTURES) do
      local P = providers.get(fx[1])
      if P.framing == "sse" then
        local body = sse_split.read(fx[2])
        local f = llm.http.framer("sse")
        local got = assert(f:feed(body))
        local rest = f:finish()
        for _, e in ipairs(rest) do got[#got + 1] = e end
        local want = sse_split.sse(body)
        assert.are.equal(#want, #got, fx[2])
        for i = 1, #want do
          assert.are.equal(want[i].data, got[i].data)
          assert.are.equal(want[i].event, got[i].event)
        end
      end
    end
  end)
end)
