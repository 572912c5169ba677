local chunks = require "luagent.chunks"
local errors = require "luagent.errors"
local json = require "luagent.json"

-- A chunk with tool-call fragments for choice 0.
local function tc(frags, finish)
  return { id = "c1", model = "m", created = 1, object = "chat.completion.chunk",
           choices = { { index = 0, delta = { tool_calls = frags }, finish_reason = finish } } }
end
local function frag(index, id, name, args)
  return { index = index, id = id, type = id and "function" or nil,
           ["function"] = { name = name, arguments = args } }
end
local function text(s, finish, usage)
  return { id = "c1", model = "m", created = 1, object = "chat.completion.chunk",
           choices = { { index = 0, delta = { content = s }, finish_reason = finish } }, usage = usage }
end

describe("luagent.chunks #unit", function()
  describe("build", function()
    it("concatenates content and keeps finish_reason, usage, id and model", function()
      local usage = { prompt_tokens = 3, completion_tokens = 2, total_tokens = 5 }
      local resp = chunks.build {
        { id = "c1", model = "m", created = 7, choices = { { index = 0, delta = { role = "assistant", content = "" } } } },
        text("Hel"), text("lo"), text(nil, "stop"),
        { id = "c1", model = "m", created = 7, choices = json.array(), usage = usage },
      }
      assert.equal("chat.completion", resp.object)
      assert.equal("c1", resp.id)
      assert.equal("m", resp.model)
      assert.equal(7, resp.created)
      assert.equal("Hello", resp.choices[1].message.content)
      assert.equal("assistant", resp.choices[1].message.role)
      assert.equal("stop", resp.choices[1].finish_reason)
      assert.same(usage, resp.usage)
    end)

    it("survives a usage-only chunk with choices = [] and chunks without choices", function()
      local resp = chunks.build { { id = "x", choices = {}, usage = { total_tokens = 1 } }, { id = "x" } }
      assert.equal(0, #resp.choices)
      assert.equal(1, resp.usage.total_tokens)
    end)

    it("assembles a tool call: id and name on the first fragment only", function()
      local resp = chunks.build {
        tc { frag(0, "call_1", "get_weather", "") },
        tc { frag(0, nil, nil, '{"loc') },
        tc { frag(0, nil, nil, 'ation":"Paris"}') },
        tc({}, "tool_calls"),
      }
      local calls = resp.choices[1].message.tool_calls
      assert.equal(1, #calls)
      assert.equal("call_1", calls[1].id)
      assert.equal("function", calls[1].type)
      assert.equal("get_weather", calls[1]["function"].name)
      assert.equal('{"location":"Paris"}', calls[1]["function"].arguments)
      assert.is_nil(resp.choices[1].message.content)
      assert.equal("tool_calls", resp.choices[1].finish_reason)
    end)

    it("assembles interleaved indices", function()
      local resp = chunks.build {
        tc { frag(0, "a", "f", ""), frag(1, "b", "g", "") },
        tc { frag(1, nil, nil, '{"y":') },
        tc { frag(0, nil, nil, '{"x":') },
        tc { frag(0, nil, nil, "1}"), frag(1, nil, nil, "2}") },
      }
      local calls = resp.choices[1].message.tool_calls
      assert.equal(2, #calls)
      assert.same({ "a", "f", '{"x":1}' }, { calls[1].id, calls[1]["function"].name, calls[1]["function"].arguments })
      assert.same({ "b", "g", '{"y":2}' }, { calls[2].id, calls[2]["function"].name, calls[2]["function"].arguments })
    end)

    it("starts a new call when the same index arrives with a new id (LiteLLM#39796)", function()
      local resp = chunks.build {
        tc { frag(0, "call_a", "f", '{"n":1}') },
        tc { frag(0, "call_b", "f", '{"n":') },
        tc { frag(0, nil, nil, "2}") },
      }
      local calls = resp.choices[1].message.tool_calls
      assert.equal(2, #calls)
      assert.equal('{"n":1}', calls[1]["function"].arguments)
      assert.equal("call_b", calls[2].id)
      assert.equal('{"n":2}', calls[2]["function"].arguments)
    end)

    it("continues the call when the same id is repeated, and does not repeat the name", function()
      local resp = chunks.build {
        tc { frag(0, "call_a", "lookup", '{"q":') },
        tc { frag(0, "call_a", "lookup", '"x"}') },
      }
      local calls = resp.choices[1].message.tool_calls
      assert.equal(1, #calls)
      assert.equal("lookup", calls[1]["function"].name)
      assert.equal('{"q":"x"}', calls[1]["function"].arguments)
    end)

    it("continues the latest call for fragments without an index", function()
      local resp = chunks.build {
        tc { { id = "a", ["function"] = { name = "f", arguments = "{" } } },
        tc { { ["function"] = { arguments = "}" } } },
        tc { { id = "b", ["function"] = { name = "g", arguments = "{}" } } },
      }
      local calls = resp.choices[1].message.tool_calls
      assert.equal(2, #calls)
      assert.equal("{}", calls[1]["function"].arguments)
      assert.equal("g", calls[2]["function"].name)
    end)

    it("gives a call without argument fragments the arguments {}", function()
      local resp = chunks.build { tc { frag(0, "a", "now", nil) } }
      assert.equal("{}", resp.choices[1].message.tool_calls[1]["function"].arguments)
    end)

    it("keeps choices apart by index (n > 1)", function()
      local resp = chunks.build {
        { choices = { { index = 1, delta = { content = "B" } } } },
        { choices = { { index = 0, delta = { content = "A" } } } },
        { choices = { { index = 1, delta = { content = "b" }, finish_reason = "stop" } } },
      }
      assert.equal(2, #resp.choices)
      assert.equal(0, resp.choices[1].index)
      assert.equal("A", resp.choices[1].message.content)
      assert.equal("Bb", resp.choices[2].message.content)
      assert.equal("stop", resp.choices[2].finish_reason)
    end)

    -- The builder keeps each choice at its integer index, beside its own
    -- fields: an index that is not an integer must not land on them.
    it("counts an index that is not an integer as choice 0", function()
      local resp = chunks.build {
        { id = "x", choices = { { index = "id", delta = { content = "a" } } } },
        { choices = { { index = 0.0, delta = { content = "b" } } } },
        { choices = { { index = "model", delta = { content = "c" } } } },
        { choices = { { index = 2.0, delta = { content = "z" }, finish_reason = "stop" } } },
      }
      assert.equal("x", resp.id)
      assert.equal(2, #resp.choices)
      assert.equal(0, resp.choices[1].index)
      assert.equal("abc", resp.choices[1].message.content)
      assert.equal(2, resp.choices[2].index)
      assert.equal("z", resp.choices[2].message.content)
    end)

    it("collects reasoning_content separately", function()
      local resp = chunks.build {
        { choices = { { index = 0, delta = { reasoning_content = "think" } } } },
        text("answer"),
      }
      assert.equal("think", resp.choices[1].message.reasoning_content)
      assert.equal("answer", resp.choices[1].message.content)
    end)

    it("assembles long replies exactly", function()
      -- lengths around the joining step: 63, 64, 65 pieces, and a long reply
      for _, n in ipairs({ 1, 63, 64, 65, 127, 128, 129, 4001 }) do
        local b = chunks.builder()
        local want, think, args = {}, {}, {}
        b:add(tc { frag(0, "call_1", "f", "") })
        for i = 1, n do
          local piece = "t" .. i .. (i % 7 == 0 and "" or " ")   -- empty pieces too
          want[i] = piece
          think[i] = "r" .. i
          args[i] = tostring(i % 10)
          b:add { choices = { { index = 0, delta = { content = piece, reasoning_content = think[i],
                                                     tool_calls = { frag(0, nil, nil, args[i]) } } } } }
        end
        local m = b:response().choices[1].message
        assert.equal(table.concat(want), m.content)
        assert.equal(table.concat(think), m.reasoning_content)
        assert.equal(table.concat(args), m.tool_calls[1]["function"].arguments)
      end
    end)

    -- A string per token would be about 40 bytes of Lua heap for each
    -- 8-byte piece; the builder keeps the bytes of the text.
    it("keeps a long reply in about the size of its text", function()
      for _, field in ipairs({ "content", "reasoning_content" }) do
        collectgarbage("collect")
        local before = collectgarbage("count")
        local b = chunks.builder()
        local size = 0
        for i = 1, 20000 do
          local piece = "t" .. i .. " "
          size = size + #piece
          b:add { choices = { { index = 0, delta = { [field] = piece } } } }
        end
        collectgarbage("collect")
        local kept = (collectgarbage("count") - before) * 1024
        assert.is_true(kept < 2 * size + 4096, ("%d bytes kept for %d bytes of text"):format(kept, size))
        assert.equal(size, #b:response().choices[1].message[field])
      end
    end)

    it("takes id, model and created from the first chunk with an id, the last fingerprint and usage", function()
      local b = chunks.builder()
      b:add { model = "early", choices = { { index = 0, delta = { content = "a" } } } }
      b:add { id = "c9", model = "m", created = 3, system_fingerprint = "fp_1",
              choices = { { index = 0, delta = { content = "b" } } }, usage = { total_tokens = 1 } }
      b:add { id = "other", model = "x", created = 4, system_fingerprint = "fp_1", choices = {} }
      b:add { system_fingerprint = "fp_2", usage = { total_tokens = 2 } }
      local r = b:response()
      assert.same({ "c9", "m", 3, "fp_2", 2, "ab" },
        { r.id, r.model, r.created, r.system_fingerprint, r.usage.total_tokens, r.choices[1].message.content })
      b:add { system_fingerprint = 7 }
      b:add { system_fingerprint = 8 }
      assert.equal(8, b:response().system_fingerprint)
    end)

    it("raises for a value that is not a chunk, naming it", function()
      local b = chunks.builder()
      assert.error_matches(function() b:add(42) end, "chunk must be a table, got number 42")
      assert.error_matches(function() b:add("x") end, "got string x")
      assert.error_matches(function() b:add(nil) end, "got nil nil")
      assert.error_matches(function() b:add(("y"):rep(500)) end, "got string " .. ("y"):rep(60) .. "$")
    end)

    it("checks at load that the chunk shape has every field the builder reads", function()
      local core = require "luagent.chunks.core"
      local shape = {}
      for part, fields in pairs(chunks.SHAPE) do shape[part] = fields end
      shape.delta = { "role", "content", "tool_calls" }
      assert.error_matches(function() core.setup(json.array_mt, shape) end,
        "the chunk shape has no field delta.reasoning_content")
      core.setup(json.array_mt, chunks.SHAPE)
    end)

    it("ignores a choice, a delta or a fragment that is not one", function()
      local b = chunks.builder()
      for _, bad in ipairs({ {}, { choices = 5 }, { choices = { 42, "x", false } },
                             { choices = { { index = 0, delta = 5 } } },
                             { choices = { { index = 0, delta = { content = 5, reasoning_content = {} } } } },
                             { choices = { { index = 0, delta = { tool_calls = { 1, "x", { index = 0 / 0 } } } } } },
                             { choices = { { index = 0, delta = { tool_calls = { { ["function"] = 3 } } } } } } }) do
        b:add(bad)
      end
      b:add(text("ok", "stop"))
      local m = b:response().choices[1]
      assert.equal("ok", m.message.content)
      assert.equal("stop", m.finish_reason)
      assert.is_nil(m.message.reasoning_content)
      -- a NaN index is no index: the fragment starts the first call, and the
      -- one without a table for "function" continues it (no name, no arguments)
      assert.equal(1, #m.message.tool_calls)
      assert.equal("{}", m.message.tool_calls[1]["function"].arguments)
    end)

    it("refuses to add through something that is not a builder", function()
      local b = chunks.builder()
      assert.has_error(function() b.add({}, text("x")) end)
      assert.error_matches(function() b.response(io.stdout) end, "luagent.ChunkBuilder expected")
    end)

    it("keeps the response it gave: later chunks make a new one", function()
      local b = chunks.builder()
      b:add(text("a"))
      local r1 = b:response()
      b:add(text("b"))
      assert.equal("a", r1.choices[1].message.content)
      assert.equal("ab", b:response().choices[1].message.content)
      assert.equal(json.array_mt, getmetatable(r1.choices))
    end)

    it("gives empty content for an empty stream of one choice", function()
      local resp = chunks.build { text(nil, "stop") }
      assert.equal("", resp.choices[1].message.content)
    end)
  end)

  describe("builder:check_tool_arguments", function()
    it("accepts JSON objects", function()
      local b = chunks.builder()
      b:add(tc { frag(0, "a", "f", '{"x":[1,2]}') })
      b:add(tc { frag(1, "b", "g", "") })
      assert.is_true(b:check_tool_arguments())
    end)

    it("names the tool whose arguments are not JSON", function()
      local b = chunks.builder()
      b:add(tc { frag(0, "a", "ok_tool", "{}") })
      b:add(tc { frag(1, "call_9", "get_weather", '{"location": "Par') })
      local ok, err = b:check_tool_arguments()
      assert.is_nil(ok)
      assert.equal("APIError", err.type)
      assert.matches("get_weather", err.message, 1, true)
      assert.matches("call_9", err.message, 1, true)
    end)

    it("refuses arguments that are JSON but not an object", function()
      local b = chunks.builder()
      b:add(tc { frag(0, "a", "f", "[1,2]") })
      local ok, err = b:check_tool_arguments()
      assert.is_nil(ok)
      assert.is_true(errors.is(err, "APIError"))
    end)
  end)

  describe("normalize_finish", function()
    it("maps to the four OpenAI reasons", function()
      assert.equal("stop", chunks.normalize_finish("stop"))
      assert.equal("length", chunks.normalize_finish("length"))
      assert.equal("tool_calls", chunks.normalize_finish("tool_calls"))
      assert.equal("tool_calls", chunks.normalize_finish("function_call"))
      assert.equal("content_filter", chunks.normalize_finish("content_filter"))
      assert.equal("stop", chunks.normalize_finish("eos"))
      assert.equal("stop", chunks.normalize_finish("something_new"))
      assert.is_nil(chunks.normalize_finish(nil))
    end)
  end)

  describe("decoder base", function()
    local new = chunks.decoder_type("p", function(self, _, data)
      if data == "stop" then return self:chunk({}, "stop") end
      return false
    end)

    it("reports StreamIncomplete unless done or finished", function()
      local dec = new("m", { id = "i", created = 1 })
      assert.is_false(dec:feed(nil, "x"))
      local ok, err = dec:finish()
      assert.is_nil(ok)
      assert.equal("StreamIncomplete", err.type)
      assert.equal("p", err.provider)
      assert.equal("stop", dec:feed(nil, "stop").choices[1].finish_reason)
      assert.is_true(dec:finish())
    end)

    it("stamps chunks with the stream's id, model and created", function()
      local dec = new("m", { id = "i", created = 5 })
      local c = dec:chunk({ content = "x" })
      assert.same({ id = "i", object = "chat.completion.chunk", created = 5, model = "m",
                    choices = { { index = 0, delta = { content = "x" } } } }, c)
    end)

    it("builds a response of one event, or of none", function()
      assert.equal("stop", new("m"):build("stop").choices[1].finish_reason)
      assert.same({}, new("m"):build("x").choices)
    end)
  end)

  it("new_id gives distinct ids", function()
    assert.not_equal(chunks.new_id("call_"), chunks.new_id("call_"))
    assert.matches("^call_%w+$", chunks.new_id("call_"))
  end)
end)
