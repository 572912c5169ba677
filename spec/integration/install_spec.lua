-- make install and make uninstall into a scratch prefix and a DESTDIR:
-- what the README says works after an install (the CLI, require "luagent"
-- from the stock lua5.4 with LUA_CPATH, a host built with pkg-config
-- luagent) works, and uninstall leaves no file behind.
local proc = require "proc"

local build, run = proc.build, proc.run
local preload = os.getenv("LUAGENT_PRELOAD")
local stock_lua = (preload and ("ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD='%s' "):format(preload) or "")
  .. "lua5.4"
-- under `make asan` the installed library is instrumented: so is the host
local sanitize = preload and " -fsanitize=address,undefined" or ""

local function files_under(dir)
  local out = run("find " .. dir .. " -type f | sort")
  local list = {}
  for line in out:gmatch("[^\n]+") do list[#list + 1] = line:sub(#dir + 2) end
  return list
end

describe("make install / uninstall #integration", function()
  local tmp
  before_each(function()
    tmp = proc.tmpname("install")
    assert(os.execute("mkdir -p " .. tmp))
  end)
  after_each(function() os.execute("rm -rf " .. tmp) end)

  local function make(target, vars)
    local out, code = run(("make -s %s BUILD=%s %s 2>&1"):format(target, build, vars))
    assert.are.equal(0, code, out)
  end

  it("installs a working CLI, Lua module and pkg-config library into PREFIX, and removes them", function()
    local prefix = tmp .. "/prefix"
    make("install", "PREFIX=" .. prefix)
    assert.are.same({ "bin/luagent", "include/luagent.h", "lib/libluagent.a", "lib/lua/5.4/luagent.so",
                      "lib/pkgconfig/luagent.pc" }, files_under(prefix))
    local out, code = run(prefix .. "/bin/luagent -e 'print(require(\"luagent\")._VERSION)'")
    assert.are.equal(0, code, out)
    assert.are.equal("luagent 0.1.0\n", out)
    -- the stock interpreter, with the LUA_CPATH the README gives
    out, code = run(("LUA_CPATH='%s/lib/lua/5.4/?.so;;' %s -e %q"):format(prefix, stock_lua,
      [[local llm = require "luagent" print(llm.run(function() llm.sleep(0.01) return "ran" end))]]))
    assert.are.equal(0, code, out)
    assert.are.equal("ran\n", out)
    -- a host built the README's way: pkg-config luagent
    local host = tmp .. "/host"
    out, code = run(("PKG_CONFIG_PATH=%s/lib/pkgconfig cc%s -o %s examples/frame_host.c "
      .. "$(PKG_CONFIG_PATH=%s/lib/pkgconfig pkg-config --cflags --libs luagent) 2>&1")
      :format(prefix, sanitize, host, prefix))
    assert.are.equal(0, code, out)
    -- 0.25 s, as cli_spec's frame host: with 3 frames one slow step (the
    -- clean-clone `make asan` once had one of 19 ms) was already "most"
    local s = proc.script([[require("luagent").sleep(0.25) print("script done")]])
    out, code = run(host .. " " .. s)
    os.remove(s)
    assert.are.equal(0, code, out)
    assert.matches("script done", out)
    assert.matches("status=ok", out)
    make("uninstall", "PREFIX=" .. prefix)
    assert.are.same({}, files_under(prefix))
  end)

  it("stages into DESTDIR under PREFIX, and uninstall from there leaves nothing", function()
    make("install", "PREFIX=/usr/local DESTDIR=" .. tmp)
    local list = files_under(tmp)
    assert.are.equal(5, #list)
    for _, f in ipairs(list) do assert.matches("^usr/local/", f) end
    local pc = proc.read(tmp .. "/usr/local/lib/pkgconfig/luagent.pc")
    assert.matches("prefix=/usr/local\n", pc)
    make("uninstall", "PREFIX=/usr/local DESTDIR=" .. tmp)
    assert.are.same({}, files_under(tmp))
  end)
end)
