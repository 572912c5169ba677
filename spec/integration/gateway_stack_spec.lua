-- The gateway's relayed stream keeps its handler task's Lua stack at 80
-- slots (docs/architecture.md, "The gateway's stream relay"): Lua 5.4
-- grows a coroutine's stack 40, 80, 160 and a stream keeps what it grew
-- to, so one local too many anywhere from serve's dispatch down to the
-- provider's build_request or its decoder's feed doubles every stream's
-- stack. Upstream: build/mockllm; the gateway: llm.serve in this process;
-- the client: luagent itself.
local llm = require "luagent"
local gateway = require "luagent.gateway"
local servers = require "servers"

local getinfo, getlocal = debug.getinfo, debug.getlocal

-- A call hook measuring the stack slot each C function call starts from
-- (Lua's L->top then: the function, its arguments). Lua gives a C call
-- 20 free slots above that (LUA_MINSTACK) and grows the stack first when
-- they are not there, so a stack of 80 slots holds while that top stays
-- under 60. A frame's size is what debug.getlocal sees of it: its locals
-- and temporaries up to the function it calls; a Lua vararg function's
-- frame sits above its arguments. The task's function is at slot 1.
local function probe()
  local p = { top = 0 }
  function p.hook()
    if getinfo(2, "S").what ~= "C" then return end
    local depth = 2
    while getinfo(depth + 1, "S") do depth = depth + 1 end
    local func = 1
    for level = depth, 3, -1 do
      local u = getinfo(level, "uS")
      if u.isvararg and u.what ~= "C" then
        local extra = 0
        while getlocal(level, -(extra + 1)) do extra = extra + 1 end
        func = func + 1 + u.nparams + extra
      end
      local n = 0
      while getlocal(level, n + 1) do n = n + 1 end
      func = func + 1 + n
    end
    local n = 0      -- the C function's arguments and the hook's own table above them
    while getlocal(2, n + 1) do n = n + 1 end
    if func + n > p.top then p.top, p.where = func + n, debug.traceback("", 2) end
  end
  return p
end

describe("the gateway's relayed stream #integration", function()
  after_each(function() servers.assert_clean(assert) end)

  it("keeps its handler's Lua stack within 80 slots, set-up and streaming", function()
    local mock = servers.mock()
    local cfg = gateway.config.normalise({ model_list = { { model_name = "bench", litellm_params = {
      model = "openai/bench", api_key = "sk-upstream",
      api_base = mock.url .. "/s/chunks=20/v1" } } } })
    local g = gateway.new(cfg)
    local routes, n, p = g:routes(), 0, probe()
    local handler = routes["POST /v1/chat/completions"]
    routes["POST /v1/chat/completions"] = function(req, res)
      n = n + 1
      -- from the third request on (the first ones load modules and make
      -- the metric series); a tail call, so no frame of its own
      if n >= 3 then debug.sethook(p.hook, "c") end
      return handler(req, res)
    end
    local srv = assert(llm.serve{ host = "127.0.0.1", port = 0, routes = routes })
    for _ = 1, 4 do
      local s = assert(llm.completion{ model = "openai/bench", api_key = "sk-gateway", stream = true,
                                       api_base = ("http://127.0.0.1:%d/v1"):format(srv.port),
                                       messages = { { role = "user", content = "hi" } } })
      local text = assert(s:text())
      assert.are.equal(20, select(2, text:gsub("t%d+ ", "")))
    end
    srv:close()
    assert.is_true(srv:wait(10))
    mock.stop()
    assert.is_true(p.top > 40, "the probe saw the handler's calls")
    assert.is_true(p.top < 60, ("a C call at stack slot %d (60 or more grows the stack to 160):%s")
      :format(p.top, tostring(p.where)))
  end)

  it("relays plain events without a Lua string each: their bytes go to the response in C", function()
    local h = require "serve_helpers"
    local mock = servers.mock()
    local g = gateway.new(gateway.config.normalise({ model_list = { { model_name = "bench", litellm_params = {
      model = "openai/bench", api_key = "sk-upstream", api_base = mock.url .. "/s/chunks=2000/v1" } } } }))
    local srv = assert(llm.serve{ host = "127.0.0.1", port = 0, routes = g:routes() })
    local out = os.tmpname()
    local cmd = ("curl -sN -o %s -H 'content-type: application/json' -d '%s' http://127.0.0.1:%d/v1/chat/completions")
      :format(out, '{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}', srv.port)
    assert.are.equal(0, select(2, h.spawn(cmd):wait(30)))   -- the first stream loads what it loads
    collectgarbage("collect")
    collectgarbage("stop")
    local kb = collectgarbage("count")
    local _, code = h.spawn(cmd):wait(30)
    local grown = collectgarbage("count") - kb
    collectgarbage("restart")
    assert.are.equal(0, code)
    local f = assert(io.open(out))
    local body = f:read("a")
    f:close()
    os.remove(out)
    srv:close()
    assert.is_true(srv:wait(10))
    mock.stop()
    local _, tokens = body:gsub('"content":"t%d+ "', "")
    assert.are.equal(2000, tokens)
    assert.matches("data: %[DONE%]\n\n$", body)
    -- a Lua string an event would be 2000 x ~250 bytes; the request's
    -- own set-up and the wait's polling are some 30 KB
    assert.is_true(grown < 150, ("%.0f KB of Lua garbage for 2,000 relayed events"):format(grown))
  end)
end)
