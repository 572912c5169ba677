-- libh2o (with libwslay and libssl) is dlopen()ed by the first llm.serve,
-- not linked (runtime/h2oapi.h): a script that never serves does not map
-- it, and a missing or wrong libh2o is a clear error from llm.serve, never
-- a crash or a failed start. Each case is its own luagent process, since a
-- process loads the library once.
local proc = require "proc"

-- Prints which serving libraries are mapped before and after one serve.
local SCRIPT = [[
local llm = require "luagent"
local function mapped()
  local f = assert(io.open("/proc/self/maps"))
  local maps = f:read("a")
  f:close()
  local found = {}
  for _, lib in ipairs{ "libh2o", "libwslay" } do
    if maps:find("/" .. lib .. "%.so") then found[#found + 1] = lib end
  end
  return table.concat(found, ",")
end
print("before=" .. mapped())
local srv, err = llm.serve{ routes = { ["GET /"] = function(_, res) res:send(200, "ok") end } }
print("serve=" .. tostring(srv and srv.port or err))
print("after=" .. mapped())
if srv then srv:close() end
]]

describe("llm.serve loads libh2o on first use #integration", function()
  local script, dir
  setup(function()
    script = proc.script(SCRIPT)
    dir = proc.tmpname("libs")
    assert(os.execute("mkdir -p " .. dir .. "/empty " .. dir .. "/bad"))
    -- A real shared object under libh2o's soname, without its symbols...
    local out, code = proc.run("cc -shared -fPIC -Wl,-soname,libh2o.so.0.13 -o "
      .. dir .. "/empty/libh2o.so.0.13 -x c /dev/null")
    assert.are.equal(0, code, out)
    -- ...and a file of that name that is no shared object at all.
    proc.write(dir .. "/bad/libh2o.so.0.13", "not an ELF file\n")
  end)
  teardown(function()
    os.remove(script)
    os.execute("rm -rf " .. dir)
  end)

  it("maps neither libh2o nor libwslay until the first server, then serves", function()
    local out, code = proc.run(proc.bin .. " " .. script)
    assert.are.equal(0, code, out)
    assert.matches("before=\n", out, 1, true)
    assert.matches("serve=%d+\n", out)
    assert.matches("after=libh2o,libwslay\n", out, 1, true)
  end)

  it("names libh2o when it is missing its symbols; the script goes on", function()
    local out, code = proc.run("LD_LIBRARY_PATH=" .. dir .. "/empty " .. proc.bin .. " " .. script)
    assert.are.equal(0, code, out)
    assert.matches("serve=libh2o has no h2o__lcstris_core (a different version?)\n", out, 1, true)
  end)

  it("names the library and its package when libh2o cannot be loaded", function()
    local out, code = proc.run("LD_LIBRARY_PATH=" .. dir .. "/bad " .. proc.bin .. " " .. script)
    assert.are.equal(0, code, out)
    assert.matches("serve=cannot load libh2o (libh2o.so.0.13): install libh2o0.13\n", out, 1, true)
    assert.matches("before=\n", out, 1, true)
  end)
end)
