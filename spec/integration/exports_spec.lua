-- The public C surface: luagent.so and libluagent.a export exactly what
-- runtime/luagent.h declares with LA_API (luaopen_luagent among them),
-- nothing of the runtime's internals (it is built with -fvisibility=hidden).
local proc = require "proc"

local build, run = proc.build, proc.run

-- The names luagent.h declares with LA_API, sorted.
local function declared()
  local names = {}
  for line in io.lines("runtime/luagent.h") do
    local name = line:match("^LA_API [%w_%s%*]-%**([%w_]+)%(")
    if name then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

-- The names of a command's output lines (one per line), sorted.
local function names_of(cmd)
  local out, code = run(cmd)
  assert.are.equal(0, code, out)
  local names = {}
  for name in out:gmatch("[^\n]+") do names[#names + 1] = name end
  table.sort(names)
  return names
end

describe("exported symbols #integration", function()
  it("luagent.h declares the embedding API and luaopen_luagent", function()
    local names = declared()
    assert.is_true(#names >= 10, table.concat(names, " "))
    assert.is_truthy(table.concat(names, " "):find("luaopen_luagent", 1, true))
  end)

  it("luagent.so exports exactly them", function()
    assert.are.same(declared(), names_of("nm -D --defined-only " .. build .. "/luagent.so | awk '{print $3}'"))
  end)

  it("libluagent.a gives default visibility to exactly them", function()
    assert.are.same(declared(), names_of("readelf -sW " .. build .. "/libluagent.a"
      .. " | awk '$5 == \"GLOBAL\" && $6 == \"DEFAULT\" && $7 != \"UND\" {print $8}'"))
  end)
end)
