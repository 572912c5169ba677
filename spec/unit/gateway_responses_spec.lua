-- The gateway's Responses API translation (luagent.gateway.responses) with
-- no server: request bodies to llm.completion params, the 400s that name
-- the field, and chat completions and chunks to a Response and its events.
-- The served endpoint is covered by
-- spec/integration/gateway_responses_spec.lua with the official SDK.
local responses = require "luagent.gateway.responses"
local json = require "luagent.json"

local function refused(body)
  local p, err = responses.to_params(body)
  assert.is_nil(p)
  assert.are.equal(400, err.status)
  assert.are.equal("invalid_request", err.kind)
  return err
end

-- The events of an SSE text, decoded: {event, data} in order.
local function events(text)
  local out = {}
  for ev, data in text:gmatch("event: ([^\n]+)\ndata: ([^\n]+)\n\n") do
    out[#out + 1] = { event = ev, data = json.decode(data) }
  end
  return out
end

local function chunk(delta, finish, usage)
  return { choices = json.array{ { index = 0, delta = delta or {}, finish_reason = finish } }, usage = usage }
end

describe("gateway responses: the request", function()
  it("takes a string input with instructions as a system message first", function()
    local p = assert(responses.to_params{ model = "m", input = "hi", instructions = "be brief",
                                          max_output_tokens = 20, temperature = 0.5, top_p = 0.9,
                                          store = false, metadata = { a = "b" }, user = "u1" })
    assert.are.same({ { role = "system", content = "be brief" }, { role = "user", content = "hi" } }, p.messages)
    assert.are.equal(20, p.max_tokens)
    assert.are.equal(0.5, p.temperature)
    assert.are.equal(0.9, p.top_p)
    assert.are.equal("u1", p.user)
    assert.is_false(p.stream)
    assert.is_nil(p.store)
    assert.is_nil(p.metadata)
  end)

  it("takes message items with or without type, developer as system, and content parts", function()
    local p = assert(responses.to_params{ model = "m", input = {
      { role = "developer", content = "rules" },
      { type = "message", role = "user", content = { { type = "input_text", text = "a" },
                                                      { type = "input_image", image_url = "https://x/y.png" } } },
      { role = "assistant", content = { { type = "output_text", text = "b" } } },
    } })
    assert.are.same({ role = "system", content = "rules" }, p.messages[1])
    assert.are.same({ role = "user", content = { { type = "text", text = "a" },
                      { type = "image_url", image_url = { url = "https://x/y.png" } } } }, p.messages[2])
    assert.are.same({ role = "assistant", content = "b" }, p.messages[3])
  end)

  it("joins function_call items to the assistant message before them, and outputs as tool messages", function()
    local p = assert(responses.to_params{ model = "m", input = {
      { role = "user", content = "q" },
      { role = "assistant", content = "let me look" },
      { type = "function_call", call_id = "c1", name = "f", arguments = "{}" },
      { type = "function_call", call_id = "c2", name = "g", arguments = '{"x":1}' },
      { type = "function_call_output", call_id = "c1", output = "one" },
      { type = "function_call_output", call_id = "c2", output = { { type = "input_text", text = "two" } } },
      { type = "reasoning", id = "rs_1", summary = {} },
    } })
    assert.are.equal(4, #p.messages)
    local a = p.messages[2]
    assert.are.equal("let me look", a.content)
    assert.are.same({ { id = "c1", type = "function", ["function"] = { name = "f", arguments = "{}" } },
                      { id = "c2", type = "function", ["function"] = { name = "g", arguments = '{"x":1}' } } },
                    a.tool_calls)
    assert.are.same({ role = "tool", tool_call_id = "c1", content = "one" }, p.messages[3])
    assert.are.same({ role = "tool", tool_call_id = "c2", content = "two" }, p.messages[4])
  end)

  it("takes function tools and every tool_choice", function()
    local tools = { { type = "function", name = "f", description = "d", parameters = { type = "object" } } }
    local p = assert(responses.to_params{ model = "m", input = "x", tools = tools, tool_choice = "required",
                                          parallel_tool_calls = false })
    assert.are.same({ { type = "function", ["function"] = { name = "f", description = "d",
                                                            parameters = { type = "object" } } } }, p.tools)
    assert.are.equal("required", p.tool_choice)
    assert.is_false(p.parallel_tool_calls)
    p = assert(responses.to_params{ model = "m", input = "x", tools = tools,
                                    tool_choice = { type = "function", name = "f" } })
    assert.are.same({ type = "function", ["function"] = { name = "f" } }, p.tool_choice)
  end)

  it("turns text.format json_schema into a response_format", function()
    local p = assert(responses.to_params{ model = "m", input = "x",
      text = { format = { type = "json_schema", name = "out", schema = { type = "object" }, strict = true } } })
    assert.are.same({ type = "json_schema", json_schema = { name = "out", schema = { type = "object" }, strict = true } },
                    p.response_format)
  end)

  it("refuses what it cannot serve or read with a 400 naming the field", function()
    assert.are.equal("model", refused{ input = "x" }.param)
    assert.are.equal("input", refused{ model = "m" }.param)
    assert.are.equal("input", refused{ model = "m", input = {} }.param)
    assert.are.equal("previous_response_id", refused{ model = "m", input = "x", previous_response_id = "resp_1" }.param)
    assert.are.equal("conversation", refused{ model = "m", input = "x", conversation = "conv_1" }.param)
    local e = refused{ model = "m", input = "x", tools = { { type = "function", name = "f" }, { type = "file_search" } } }
    assert.are.equal("tools", e.param)
    assert.matches("tools%[1%]: tool type file_search", e.message)
    assert.are.equal("tool_choice", refused{ model = "m", input = "x", tool_choice = "sometimes" }.param)
    assert.are.equal("max_output_tokens", refused{ model = "m", input = "x", max_output_tokens = 0 }.param)
    assert.are.equal("temperature", refused{ model = "m", input = "x", temperature = "hot" }.param)
    e = refused{ model = "m", input = { { role = "tool", content = "x" } } }
    assert.matches("input%[0%]%.role", e.message)
    e = refused{ model = "m", input = { { type = "web_search_call", id = "ws_1" } } }
    assert.matches("input%[0%]: unsupported input item type web_search_call", e.message)
    e = refused{ model = "m", input = { { type = "function_call", name = "f" } } }
    assert.matches("call_id", e.message)
  end)
end)

describe("gateway responses: the answer", function()
  it("makes a Response of text and tool calls, echoing the request", function()
    local params = assert(responses.to_params{ model = "my-model", input = "x", instructions = "sys",
                                               tools = { { type = "function", name = "f" } } })
    local r = json.decode(responses.response({
      created = 123,
      choices = { { index = 0, finish_reason = "tool_calls", message = { role = "assistant", content = "calling",
        tool_calls = { { id = "call_1", type = "function", ["function"] = { name = "f", arguments = '{"a":1}' } } } } } },
      usage = { prompt_tokens = 10, completion_tokens = 5, total_tokens = 15,
                prompt_tokens_details = { cached_tokens = 4 }, completion_tokens_details = { reasoning_tokens = 2 } },
    }, params))
    assert.are.equal("response", r.object)
    assert.are.equal("completed", r.status)
    assert.are.equal("my-model", r.model)
    assert.are.equal("sys", r.instructions)
    assert.are.equal(123, r.created_at)
    assert.are.equal("f", r.tools[1].name)
    assert.are.equal("message", r.output[1].type)
    assert.are.equal("calling", r.output[1].content[1].text)
    assert.are.same({ type = "function_call", id = r.output[2].id, call_id = "call_1", name = "f",
                      arguments = '{"a":1}', status = "completed" }, r.output[2])
    assert.are.same({ input_tokens = 10, output_tokens = 5, total_tokens = 15,
                      input_tokens_details = { cached_tokens = 4 },
                      output_tokens_details = { reasoning_tokens = 2 } }, r.usage)
    assert.is_nil(r.incomplete_details)
  end)

  it("is incomplete, for max_output_tokens, when the output was cut", function()
    local r = json.decode(responses.response({ choices = { { finish_reason = "length",
      message = { role = "assistant", content = "cut sh" } } } }, nil))
    assert.are.equal("incomplete", r.status)
    assert.are.same({ reason = "max_output_tokens" }, r.incomplete_details)
  end)
end)

describe("gateway responses: the stream", function()
  it("closes the text item before a tool call's, and ends with the whole Response", function()
    local params = assert(responses.to_params{ model = "m", input = "x", stream = true })
    local enc = responses.stream(true, params)
    local text = enc:chunk(chunk{ role = "assistant" })
      .. enc:chunk(chunk{ content = "Hel" }) .. enc:chunk(chunk{ content = "lo" })
      .. enc:chunk(chunk{ tool_calls = { { index = 0, id = "call_9", ["function"] = { name = "f", arguments = "" } } } })
      .. enc:chunk(chunk{ tool_calls = { { index = 0, ["function"] = { arguments = '{"a"' } } } })
      .. enc:chunk(chunk{ tool_calls = { { index = 0, ["function"] = { arguments = ":1}" } } } })
      .. enc:chunk(chunk({}, "tool_calls"))
      .. enc:chunk{ choices = json.array(), usage = { prompt_tokens = 3, completion_tokens = 4, total_tokens = 7 } }
      .. enc:finish()
    local evs = events(text)
    local types = {}
    for i, e in ipairs(evs) do
      types[i] = e.event
      assert.are.equal(e.event, e.data.type)
      assert.are.equal(i - 1, e.data.sequence_number)
    end
    assert.are.same({ "response.created", "response.in_progress",
      "response.output_item.added", "response.content_part.added",
      "response.output_text.delta", "response.output_text.delta",
      "response.output_text.done", "response.content_part.done", "response.output_item.done",
      "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
      "response.function_call_arguments.done", "response.output_item.done", "response.completed" }, types)
    assert.are.equal("Hello", evs[7].data.text)
    assert.are.equal(1, evs[10].data.output_index)
    assert.are.equal("call_9", evs[10].data.item.call_id)
    assert.are.equal('{"a":1}', evs[13].data.arguments)
    local final = evs[15].data.response
    assert.are.equal("completed", final.status)
    assert.are.equal(2, #final.output)
    assert.are.equal("Hello", final.output[1].content[1].text)
    assert.are.equal('{"a":1}', final.output[2].arguments)
    assert.are.equal(7, final.usage.total_tokens)
    assert.are.equal(evs[1].data.response.id, final.id)
  end)

  it("sends response.incomplete when the output was cut, and an error event when the stream failed", function()
    local enc = responses.stream(false, nil)
    local evs = events(enc:chunk(chunk({ content = "a" }, "length")) .. enc:finish())
    assert.are.equal("response.incomplete", evs[#evs].event)
    assert.are.same({ reason = "max_output_tokens" }, evs[#evs].data.response.incomplete_details)
    enc = responses.stream(false, nil)
    enc:chunk(chunk{ content = "a" })
    local ev = enc:error{ status = 502, kind = "upstream", message = "cut off" }
    assert.are.equal("error", ev.event)
    local d = json.decode(ev.data)
    assert.are.equal("error", d.type)
    assert.are.equal("cut off", d.message)
    assert.are.equal("api_error", d.code)
    assert.are.equal(5, d.sequence_number)       -- after created, in_progress, added, part added, delta
    assert.has_error(function() enc:raw(nil, "event: x\n\n") end)
  end)
end)
