-- luagent.json.core (runtime/json.c): the C decoder behind json.decode.
-- Its rules one by one, then differential checks against the cjson path it
-- replaced (spec/support/json_oracle.lua, on lua-cjson) on every
-- fixture body, on generated JSON texts and on mutated ones.
local json = require "luagent.json"
local support = require "spec.support.sse_split"
local core = require "luagent.json.core"

local MT = json.array_mt
local cjson_null = require("cjson").null

local function decode(s) return core.decode(s, MT) end

-- The same codec on lua-cjson (spec/support/json_oracle.lua).
local fallback = require "spec.support.json_oracle"

-- Numbers agree when they are equal and of the same subtype, or when the cjson
-- path (which reads every number as a double) rounded an integer literal
-- beyond 2^53 that C kept exact.
local function same_number(a, b)
  if a ~= a then return b ~= b end
  if math.type(a) == math.type(b) and a == b then return true end
  return math.type(a) == "integer" and a + 0.0 == b + 0.0
end

-- Deep comparison of a C-decoded value with a fallback-decoded one; returns
-- nil or the path where they differ. Array marks are each module's own.
local function diff(a, b, path)
  path = path or "$"
  if type(a) ~= type(b) then return path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    return not same_number(a, b) and (path .. ": " .. ("%s %s vs %s %s")
      :format(math.type(a), a, math.type(b), b)) or nil
  end
  if type(a) ~= "table" then
    return a ~= b and (path .. ": " .. tostring(a) .. " vs " .. tostring(b)) or nil
  end
  if json.is_array(a) ~= fallback.is_array(b) then return path .. ": array mark" end
  for k, v in pairs(a) do
    local d = diff(v, b[k], path .. "." .. tostring(k))
    if d then return d end
  end
  for k in pairs(b) do
    if a[k] == nil then return path .. "." .. tostring(k) .. ": missing in C" end
  end
  return nil
end

-- Decodes s both ways; asserts the same acceptance and the same value.
local function check_same(s)
  local a, aerr = decode(s)
  local b, berr = fallback.decode(s)
  assert((aerr == nil) == (berr == nil), ("acceptance differs on %q: %s / %s")
    :format(s, tostring(aerr), tostring(berr)))
  local d = aerr == nil and diff(a, b)
  assert(not d, ("values differ on %q at %s"):format(s, tostring(d)))
end

local function raises(f, ...) return not pcall(f, ...) end

-- A 31-bit LCG: reproducible across Lua builds, seeds printed on failure.
local function rng(seed)
  local x = seed
  return function(n)
    x = (x * 1103515245 + 12345) % 2147483648
    return x % n + 1
  end
end

describe("luagent.json.core #unit", function()
  it("is what json.decode runs inside the runtime", function()
    local v, err = json.decode("[1,")
    assert.is_nil(v)
    assert.equal("invalid JSON at byte 4: expected value", err)
    assert.equal("cannot decode a nil", select(2, json.decode(nil)))
  end)

  describe("null", function()
    it("leaves object keys absent and array holes", function()
      local v = decode('{"a":null,"b":[null,2,null],"c":{"d":null}}')
      assert.same({ b = { [2] = 2 }, c = {} }, v)
      assert.is_nil(support.find_userdata(v))
    end)

    it("gives a lone nil without an error at the top level", function()
      assert.equal(1, select("#", decode("null")))
      assert.equal(1, select("#", decode(" \n null\t")))
    end)

    it("lets the last duplicate key win, null included", function()
      assert.same({}, decode('{"a":1,"a":null}'))
      assert.same({ a = 2 }, decode('{"a":null,"a":2}'))
      assert.same({ a = 3, b = 2 }, decode('{"a":1,"b":2,"a":3}'))
    end)
  end)

  describe("numbers", function()
    local function is(v, want, mtype)
      assert.equal(mtype, math.type(v))
      assert.is_true(v == want or (v ~= v and want ~= want), tostring(v))
    end

    it("keeps integer literals exact over the whole int64 range", function()
      is(decode("0"), 0, "integer")
      is(decode("-0"), 0, "integer")
      is(decode("42"), 42, "integer")
      is(decode("-17"), -17, "integer")
      is(decode("123456789012345678"), 123456789012345678, "integer")
      is(decode("9007199254740993"), 9007199254740993, "integer")
      is(decode("9223372036854775807"), math.maxinteger, "integer")
      is(decode("-9223372036854775808"), math.mininteger, "integer")
    end)

    it("reads other literals as floats, integral ones as integers (math.tointeger)", function()
      is(decode("0.5"), 0.5, "float")
      is(decode("-2.5e-3"), -2.5e-3, "float")
      is(decode("1E400"), math.huge, "float")
      is(decode("-1e400"), -math.huge, "float")
      is(decode("9223372036854775808"), 2 ^ 63, "float")
      is(decode("123456789012345678901234567890"), 1.2345678901234568e29, "float")
      is(decode("3.0"), 3, "integer")
      is(decode("-0.0"), 0, "integer")
      is(decode("1e2"), 100, "integer")
      is(decode("2.5E+1"), 25, "integer")
      is(decode("1e-400"), 0, "integer")
      is(decode("-9223372036854775809"), math.mininteger, "integer") -- rounds to -2^63
      is(decode("0." .. ("0"):rep(300) .. "1"), 1e-301, "float")    -- longer than its buffer
      is(decode(("9"):rep(80)), 1e80, "float")
    end)

    it("refuses Python's NaN and Infinity (RFC 8259; cjson accepted them)", function()
      for _, s in ipairs { "NaN", "Infinity", "[-Infinity]", '{"a":NaN}', "[1,Infinity]" } do
        local v, err = decode(s)
        assert.is_nil(v, s)
        assert.matches("^invalid JSON at byte %d+: ", err, 1, false, s)
        assert.is_not_nil(fallback.decode(s), s)      -- cjson's leniency, gone
      end
    end)

    it("rejects what the grammar does not allow", function()
      for _, s in ipairs { "01", "-01", "1.", ".5", "-.5", "+1", "-", "1e", "1e+", "1.e5",
                           "0x10", "inf", "-inf", "nan", "-NaN", "infinity", "1_0", "--1",
                           "[1.]", "[-]", "Infinit", "Na" } do
        local v, err = decode(s)
        assert.is_nil(v, s)
        assert.matches("^invalid JSON at byte %d+: ", err, 1, false, s)
      end
    end)
  end)

  describe("strings", function()
    it("decodes every escape", function()
      assert.equal('"\\/\b\f\n\r\t', decode([["\"\\\/\b\f\n\r\t"]]))
      assert.equal("A\0é€\u{FFFF}", decode([["\u0041\u0000\u00e9\u20AC\uffff"]]))
      assert.equal("😀𐀀\u{10FFFF}", decode([["\ud83d\ude00\uD800\uDC00\udbff\udfff"]]))
    end)

    it("turns a lone surrogate into U+FFFD (cjson failed the whole text)", function()
      assert.equal("\u{FFFD}", decode([["\ud800"]]))
      assert.equal("a\u{FFFD}b", decode([["a\udc00b"]]))
      assert.equal("\u{FFFD}A", decode([["\ud83d\u0041"]]))
      assert.equal("\u{FFFD}\u{FFFD}", decode([["\udc00\ud800"]]))
      assert.equal("\u{FFFD}\\u", decode([["\ud800\\u"]]))
      assert.is_nil(fallback.decode([["\ud800"]]))
    end)

    it("passes raw bytes >= 0x80 through, invalid UTF-8 included", function()
      assert.equal("\xff\xfe\xc3(\xed\xa0\x80", decode('"\xff\xfe\xc3(\xed\xa0\x80"'))
    end)

    it("refuses raw control characters in strings (RFC 8259; cjson accepted them)", function()
      for c = 1, 31 do
        local v, err = decode('{"k":"a' .. string.char(c) .. 'b"}')
        assert.is_nil(v, c)
        assert.equal("invalid JSON at byte 8: raw control character in string (must be escaped)", err)
      end
      assert.is_nil(decode('{"a\tb":1}'))                       -- in a key too
      assert.equal("a\tb\nc\1\31", decode('"a\\tb\\nc\\u0001\\u001f"'))   -- escaped: fine
      assert.equal(" \127", decode('" \127"'))                     -- DEL is no control here
      local v, err = decode('"a\0b"')
      assert.is_nil(v)
      assert.equal("invalid JSON at byte 3: NUL byte in string", err)
    end)

    it("rejects bad escapes and unterminated strings", function()
      for _, s in ipairs { [["\x"]], [["\u12"]], [["\u12G4"]], [["\U0041"]], [["\']],
                           [["abc]], [["abc\"]], '"\\', '"\\\0"', [["\ud800\u12"]] } do
        assert.is_nil(decode(s), s)
      end
      assert.equal("invalid JSON at byte 3: invalid escape", select(2, decode([["a\x"]])))
      assert.equal("invalid JSON at byte 1: unterminated string", select(2, decode('"abc')))
    end)

    it("pushes long strings, escaped or not", function()
      local long = ("x"):rep(100000)
      assert.equal(long, decode('"' .. long .. '"'))
      assert.equal(long .. "\n" .. long, decode('"' .. long .. "\\n" .. long .. '"'))
    end)

    -- Short strings come through a per-state cache of 256 slots, found by a
    -- hash of the length and three bytes: these texts make every slot
    -- collide many times, keys and values of the same bytes meet, and the
    -- collector runs in between.
    it("gives the right short strings through the string cache, collisions and collections included", function()
      local texts = {}
      for i = 1, 3000 do
        -- same length, same first, middle and last byte: one slot for all
        local a = ("k%05dxx%05dk"):format(i, i * 7 % 100000)
        local b = ("%d"):rep(i % 5 + 1):format(i, i, i, i, i)
        texts[#texts + 1] = { ('{"%s":"%s","%s":"%s"}'):format(a, b, b, a), a, b }
      end
      for round = 1, 3 do
        for i, t in ipairs(texts) do
          local v = decode(t[1])
          assert.equal(t[3], v[t[2]])
          assert.equal(t[2], v[t[3]])
          if i % 500 == 0 then collectgarbage() end
        end
        collectgarbage()
      end
      -- a key and a value of the same bytes, both ways, and the empty string
      local v = decode('{"id":"id","":"","x":{"id":["id",""]}}')
      assert.same({ id = "id", [""] = "", x = { id = { "id", "" } } }, v)
      -- the longest cached length and one byte more
      local s30, s31 = ("a"):rep(29) .. "b", ("a"):rep(30) .. "b"
      assert.same({ [s30] = s31, [s31] = s30 }, decode(('{"%s":"%s","%s":"%s"}'):format(s30, s31, s31, s30)))
    end)
  end)

  describe("empty arrays", function()
    it("get array_mt so encoding keeps []", function()
      local v = decode('{"a":[],"b":[ \n\t],"c":{},"d":[[]],"e":[null]}')
      assert.equal(MT, getmetatable(v.a))
      assert.equal(MT, getmetatable(v.b))
      assert.is_nil(getmetatable(v.c))
      assert.equal(MT, getmetatable(v.d[1]))
      assert.is_nil(getmetatable(v.d))
      assert.is_nil(getmetatable(v.e))
      assert.are_not.equal(v.a, v.b)
      -- key order is lua_next's: the Lua path's copy happened to restore
      -- the constructor's order, the C encoder keeps the table's own
      local s = json.encode({ a = v.a, c = v.c })
      assert.is_true(s == '{"a":[],"c":{}}' or s == '{"c":{},"a":[]}', s)
      assert.equal(MT, getmetatable(decode("[]")))
    end)

    it("get no metatable when none is given", function()
      assert.is_nil(getmetatable(core.decode("[]")))
      assert.is_nil(getmetatable(core.decode("[]", nil)))
    end)
  end)

  describe("containers", function()
    it("keep arrays in order across the stack flushes of big containers", function()
      local parts = {}
      for i = 1, 100000 do parts[i] = i % 7 == 0 and "null" or tostring(i) end
      local v = decode("[" .. table.concat(parts, ",") .. "]")
      for i = 1, 100000 do assert(v[i] == (i % 7 ~= 0 and i or nil), i) end
    end)

    it("keep every key of big objects, the last duplicate winning", function()
      local parts = { '"dup":1' }
      for i = 1, 5000 do parts[#parts + 1] = ('"k%d":%d'):format(i, i) end
      parts[#parts + 1] = '"dup":2'
      parts[#parts + 1] = '"k10":null'
      local v = decode("{" .. table.concat(parts, ",") .. "}")
      assert.equal(2, v.dup)
      assert.is_nil(v.k10)
      local n = 0
      for _ in pairs(v) do n = n + 1 end
      assert.equal(5000, n)
      assert.equal(4999, v.k4999)
    end)

    -- An object is sized by the last object that began with the same key:
    -- the hint is only a hint, wrong in both directions here.
    -- After a key, the key that followed it last time is tried first: every
    -- near miss of that guess must still read the key the text holds.
    it("read the key the text holds when the key that followed last time does not", function()
      assert.same({ abc = 1, abd = 2 }, decode('{"abc":1,"abd":2}'))     -- teaches abc -> abd
      assert.same({ abc = 1, ab = 2 }, decode('{"abc":1,"ab":2}'))       -- shorter
      assert.same({ abc = 1, abd = 2 }, decode('{"abc":1,"abd":2}'))
      assert.same({ abc = 1, abdx = 2 }, decode('{"abc":1,"abdx":2}'))   -- longer
      assert.same({ abc = 1, abd = 2 }, decode('{"abc":1,"abd":2}'))
      assert.same({ abc = 1, abd = 3 }, decode('{"abc":1,"ab\\u0064":3}')) -- escaped
      assert.same({ abc = 1, ['ab"'] = 4 }, decode('{"abc":1,"ab\\"":4}'))
      assert.same({ abc = 1, abd = 5 }, decode('{"abc":1, "abd" :5}'))   -- spaces
      assert.same({ abc = { abd = 6 } }, decode('{"abc":{"abd":6}}'))    -- a value, not a key
      decode('{"abc":1,"abd":2}')
      for _, text in ipairs({ '{"abc":1,"abd', '{"abc":1,"ab', '{"abc":1,"abd"', '{"abc":1,"' }) do
        local v, err = decode(text)
        assert.is_nil(v)
        assert.matches("invalid JSON", err)
      end
    end)

    it("keep every pair whatever the size of the last object with the same first key", function()
      local function obj(n, nested)
        local parts = {}
        for i = 1, n do parts[i] = ('"k%d":%d'):format(i, i) end
        if nested then parts[#parts + 1] = '"in":' .. nested end
        return "{" .. table.concat(parts, ",") .. "}"
      end
      local function count(t)
        local c = 0
        for _ in pairs(t) do c = c + 1 end
        return c
      end
      for _, n in ipairs({ 1, 40, 2, 300, 3, 0, 7 }) do
        local m = 41 - math.min(n, 40)           -- the nested one: sized the other way
        local v = decode(obj(n, obj(m)))
        for i = 1, n do assert.equal(i, v["k" .. i]) end
        assert.equal(n + 1, count(v))
        assert.equal(m, count(v["in"]))
        assert.equal(m, v["in"]["k" .. m])
      end
      -- the same first key, then a null and a duplicate
      assert.same({ k1 = 2 }, decode('{"k1":1,"k2":null,"k1":2}'))
      assert.same({ k2 = 1 }, decode('{"k1":1,"k2":1,"k1":null}'))
    end)

    it("nest big containers inside big containers", function()
      local row = "[" .. ("1,"):rep(999) .. "1]"
      local v = decode("[" .. (row .. ","):rep(599) .. row .. "]")
      assert.equal(600, #v)
      assert.equal(1000, #v[600])
    end)

    it("take up to 1000 levels and reject deeper nesting without crashing", function()
      assert.is_table(decode(("["):rep(1000) .. ("]"):rep(1000)))
      assert.is_table(decode(('{"a":'):rep(999) .. "[]" .. ("}"):rep(999)))
      local v, err = decode(("["):rep(1001) .. ("]"):rep(1001))
      assert.is_nil(v)
      assert.equal("invalid JSON at byte 1001: nesting deeper than 1000", err)
      assert.is_nil(decode(("["):rep(200000)))
      assert.is_nil(decode(('{"a":'):rep(200000)))
    end)
  end)

  describe("errors", function()
    it("report the byte and what was expected", function()
      local cases = {
        { "", "byte 1: expected value" },
        { "   ", "byte 4: expected value" },
        { "[1 2]", "byte 4: expected ',' or ']'" },
        { '{"a" 1}', "byte 6: expected ':'" },
        { '{"a":1 "b":2}', "byte 8: expected ',' or '}'" },
        { "{1:2}", "byte 2: expected string key" },
        { '{"a":1,}', "byte 8: expected string key" },
        { "[1,]", "byte 4: expected value" },
        { "[1] x", "byte 5: expected end of input" },
        { "[1]\0", "byte 4: expected end of input" },
        { "\xEF\xBB\xBF{}", "byte 1: expected value" },
        { "\f[]", "byte 1: expected value" },
        { "tru", "byte 1: expected value" },
        { "nul", "byte 1: expected value" },
        { "1.x", "byte 1: invalid number" },
      }
      for _, c in ipairs(cases) do
        local v, err = decode(c[1])
        assert.is_nil(v)
        assert.equal("invalid JSON at " .. c[2], err)
      end
    end)

    it("fail every truncation of a fixture body", function()
      local s = support.read("openai/response.json")
      s = s:gsub("%s+$", "")
      for i = 0, #s - 1 do
        local v, err = decode(s:sub(1, i))
        assert(v == nil and err, i)
      end
    end)

    it("raise on misuse", function()
      assert.is_true(raises(core.decode))
      assert.is_true(raises(core.decode, {}))
      assert.is_true(raises(core.decode, "[]", 5))
    end)
  end)

  describe("against the cjson path", function()
    it("decodes every fixture body the same way", function()
      local n = 0
      local p = assert(io.popen("find '" .. support.fixtures .. "' -type f | sort"))
      for path in p:lines() do
        local name = path:sub(#support.fixtures + 1)
        local body = support.read(name)
        check_same(body)
        if name:match("%.sse$") then
          for _, ev in ipairs(support.sse(body)) do check_same(ev.data); n = n + 1 end
        elseif name:match("%.ndjson$") then
          for line in body:gmatch("[^\n]+") do check_same(line); n = n + 1 end
        end
        n = n + 1
      end
      p:close()
      assert.is_true(n > 60, n)
    end)

    -- A random strict JSON text (raw control and high bytes, escapes, odd
    -- number forms, duplicate keys, nulls, whitespace between every token).
    local function gen(r, depth)
      local function ws()
        local w = { "", "", "", " ", "\n", "\t", "\r\n ", "  " }
        return w[r(#w)]
      end
      local function str()
        local out = { '"' }
        for _ = 1, r(12) - 1 do
          local k = r(10)
          if k <= 4 then out[#out + 1] = string.char(96 + r(26))
          elseif k == 5 then out[#out + 1] = string.char(127 + r(128))
          elseif k == 6 then out[#out + 1] = ("\\u%04x"):format(r(31))   -- controls escaped: RFC 8259
          elseif k == 7 then
            local e = { '\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t" }
            out[#out + 1] = e[r(#e)]
          elseif k == 8 then out[#out + 1] = ("\\u%04x"):format(r(0xD7FF) - 1)
          elseif k == 9 then out[#out + 1] = ("\\u%04X"):format(0xDFFF + r(0x2000))
          else out[#out + 1] = ("\\u%04x\\u%04X"):format(0xD7FF + r(1024), 0xDBFF + r(1024))
          end
        end
        out[#out + 1] = '"'
        return table.concat(out)
      end
      local function num()
        local k = r(9)
        local sign = r(3) == 1 and "-" or ""
        if k == 1 then return sign .. "0" end
        if k == 2 then return sign .. tostring(r(1000)) end
        if k == 3 then return sign .. ("%d%09d%09d"):format(r(9), r(1000000000) - 1, r(1000000000) - 1) end
        if k == 4 then return sign .. tostring(r(100)) .. "." .. ("0"):rep(r(3)) end
        if k == 5 then return sign .. tostring(r(100) - 1) .. "." .. tostring(r(1000000)) end
        local e = ({ "e", "E" })[r(2)] .. ({ "", "+", "-" })[r(3)] .. tostring(r(40) - 1)
        if k == 6 then return sign .. tostring(r(1000)) .. e end
        if k == 7 then return sign .. "0." .. tostring(r(1000)) .. e end
        if k == 8 then return sign .. ("%d%09d%09d"):format(r(9), r(1000000000), r(1000000000)) .. e end
        return sign .. tostring(r(9)) .. "." .. tostring(r(1000000000)) .. "e" .. tostring(r(400) - 200)
      end
      local k = r(depth > 4 and 7 or 10)
      if k == 1 then return ({ "true", "false", "null" })[r(3)] end
      if k <= 3 then return num() end
      if k <= 6 then return str() end
      if k == 7 then return "[" .. ws() .. "]" end
      local n, items = r(6) - 1, {}
      for i = 1, n do
        local v = gen(r, depth + 1)
        if k >= 9 then
          local key = r(4) == 1 and '"dup"' or str()
          v = key .. ws() .. ":" .. ws() .. v
        end
        items[i] = ws() .. v .. ws()
      end
      if k >= 9 then return "{" .. table.concat(items, ",") .. ws() .. "}" end
      return "[" .. table.concat(items, ",") .. ws() .. "]"
    end

    it("decodes generated JSON texts the same way", function()
      local r = rng(20240531)
      for _ = 1, 3000 do check_same(gen(r, 0)) end
    end)

    it("decodes encoded random tables the same way", function()
      local r = rng(7)
      local function value(depth)
        local k = r(depth > 3 and 4 or 7)
        if k == 1 then return r(2) == 1 end
        if k == 2 then return r(2) == 1 and r(1 << 30) * (r(1 << 30) - 500) or (r(1000000) - 500000) / 64 end
        if k == 3 then
          local b = {}
          for i = 1, r(20) - 1 do b[i] = string.char(r(256) - 1) end
          return table.concat(b)
        end
        if k == 4 then return json.array() end
        local t = k == 5 and {} or json.array()
        for i = 1, r(5) - 1 do
          if k == 5 then t["k" .. r(20)] = value(depth + 1) else t[i] = value(depth + 1) end
        end
        return t
      end
      for _ = 1, 1000 do
        local text = assert(json.encode(value(0)))
        check_same(text)
      end
    end)

    it("accepts and rejects mutated texts like cjson, but for the documented cases", function()
      local r = rng(99)
      local alphabet = '[]{}:,"\\ -+.0123456789eEtfnulaxINy\0\1\n\t\255/'
      local disagreements = 0
      for _ = 1, 20000 do
        local s = gen(r, 0)
        for _ = 1, r(3) do
          local i, k = r(#s + 1), r(3)
          local j = r(#alphabet)
          local c = alphabet:sub(j, j)
          if k == 1 then s = s:sub(1, i - 1) .. c .. s:sub(i)
          elseif k == 2 then s = s:sub(1, i - 1) .. s:sub(i + 1)
          else s = s:sub(1, i - 1) .. c .. s:sub(i + 1) end
        end
        local a, aerr = decode(s)
        local b, berr = fallback.decode(s)
        if aerr == nil and berr == nil then
          local d = diff(a, b)
          assert(not d, ("values differ on %q at %s"):format(s, tostring(d)))
        elseif aerr == nil then      -- C accepts: only a lone surrogate escape
          disagreements = disagreements + 1
          assert(s:find("\\u[dD][89a-fA-F]"), ("only C accepts %q (%s)"):format(s, berr))
        elseif berr == nil then      -- cjson accepts: a lenient number, a raw control, a NUL end
          disagreements = disagreements + 1
          local at = tonumber(aerr:match("byte (%d+)"))
          assert(("+-.0123456789xXiInN\0\1\n\t"):find(s:sub(at, at), 1, true),
            ("only cjson accepts %q (%s)"):format(s, aerr))
        end
      end
      assert.is_true(disagreements < 2000, disagreements)
    end)
  end)

  -- encode: json.lua's Lua path (a walk, then cjson 2.1) written in one pass.
  describe("encode", function()
    local function encode(v) return core.encode(v, MT) end

    -- The fallback's own encode, with our array mark (is_array reads the field).
    local function lua_encode(v)
      local saved = fallback.array_mt
      fallback.array_mt = MT
      local s, err = fallback.encode(v)
      fallback.array_mt = saved
      return s, err
    end

    -- Same text (or the same failure and message) both ways.
    local function same_text(v)
      local a, aerr = encode(v)
      local b, berr = lua_encode(v)
      assert.equal(b, a)
      assert.equal(berr, aerr)
      return a, aerr
    end

    local function nest(n, mk)
      local top = mk()
      local t = top
      for _ = 2, n do t[1] = mk(); t = t[1] end
      return top
    end

    it("is what json.encode runs inside the runtime", function()
      -- the Lua path stops short of the 1000 levels decode accepts
      assert.is_string(json.encode(nest(1000, json.array)))
      assert.equal('{"a":[]}', json.encode({ a = json.array() }))
      assert.equal("null", json.encode(nil))
    end)

    it("writes scalars as the Lua path does", function()
      assert.equal("null", encode(nil))
      assert.equal("true", same_text(true))
      assert.equal("false", same_text(false))
      assert.equal("null", same_text(cjson_null))
      assert.equal('"x"', same_text("x"))
      assert.equal("0", same_text(0))
      assert.equal("-0", same_text(-0.0))
      assert.equal("9223372036854775807", same_text(math.maxinteger))
      assert.equal("-9223372036854775808", same_text(math.mininteger))
      assert.equal("100", same_text(100.0))
      assert.equal("0.1", same_text(0.1))
      assert.equal("1e+300", same_text(1e300))
      assert.equal("0.30000000000000004", same_text(0.1 + 0.2))
      assert.equal("4.9406564584125e-324", same_text(5e-324))
      assert.equal("9.223372036854776e+18", same_text(2 ^ 63))
      for _, v in ipairs({ 1 / 3, 2 ^ 53 + 2, 1e15 + 0.5, 1.2e16, 123456789.123, -1e-7 }) do
        same_text(v)
        assert.equal(v, tonumber(encode(v)))
      end
    end)

    it("escapes strings as cjson 2.1 does", function()
      assert.equal('"\\u0000\\u0001\\b\\t\\n\\f\\r\\u001f\\u007f \\"\\\\\\/"',
        same_text("\0\1\b\t\n\f\r\31\127 \"\\/"))
      assert.equal('"é\255€"', same_text("é\255€"))
      local all = {}
      for c = 0, 255 do all[#all + 1] = string.char(c) end
      assert.equal(table.concat(all), json.decode(same_text(table.concat(all))))
    end)

    it("tells arrays from objects by cjson's rule", function()
      assert.equal("{}", same_text({}))
      assert.equal("[]", same_text(json.array()))
      assert.equal("{}", same_text(setmetatable({}, { __name = "other" })))
      assert.equal("[1,2]", same_text({ 1, 2 }))
      assert.equal("[1,null,3]", same_text({ [1] = 1, [3] = 3 }))
      assert.equal("[null,1]", same_text({ [2] = 1 }))
      assert.equal("[1,2,null,null,null,null,null,null,null,1]",
        same_text({ 1, 2, [10] = 1 }))
      assert.equal('{"0":1}', same_text({ [0] = 1 }))
      assert.equal('{"-1":1}', same_text({ [-1] = 1 }))
      assert.equal('{"1.5":1}', same_text({ [1.5] = 1 }))
      -- number keys of objects keep cjson's 14 digits
      assert.equal('{"-1.2345678901235e+17":1}', same_text({ [-123456789012345678] = 1 }))
      assert.equal('{"1.2345678901235e+17":1}', same_text({ [123456789012345678] = 1 }))
      assert.equal('{"2147483648":1}', same_text({ [2147483648] = 1 }))
      assert.equal("Cannot serialise table: excessively sparse array",
        select(2, same_text({ [2147483647] = 1 })))
      -- array_mt marks only an empty table: otherwise the keys decide
      assert.equal('[1,null,2]', same_text(json.array({ [1] = 1, [3] = 2 })))
      local mixed = assert(same_text(json.array({ 1, x = 2 })))
      assert.same({ ["1"] = 1, x = 2 }, json.decode(mixed))
      same_text({ [1] = 1, [12] = 1 })
      assert.equal("Cannot serialise table: excessively sparse array", select(2, same_text({ [1] = 1, [20] = 1 })))
      assert.is_nil(same_text({ [1] = 1, [20] = 1 }))
    end)

    it("fails with the Lua path's messages", function()
      local co = coroutine.create(print)
      for _, v in ipairs({ print, co, io.stdout, { f = print }, { 1, { co } },
                           0 / 0, math.huge, { x = -math.huge }, { [math.huge] = 1 },
                           { [true] = 1 }, { [{}] = 1 }, { [print] = 1 },
                           { "\1luagent.raw:[]" }, { ["\1luagent.raw:x"] = 1 } }) do
        local s, err = encode(v)
        assert.is_nil(s)
        assert.is_string(err)
        same_text(v)
      end
      assert.equal("cannot encode a function as JSON", select(2, encode({ a = { print } })))
      assert.equal("Cannot serialise number: must not be NaN or Inf", select(2, encode(0 / 0)))
      assert.equal("Cannot serialise boolean: table key must be a number or string",
        select(2, encode({ [false] = 1 })))
      -- text merely containing the marker is ordinary text
      assert.equal('"x\\u0001luagent.raw:[]"', same_text("x\1luagent.raw:[]"))
    end)

    it("takes 1000 levels, and fails deeper nesting and cycles", function()
      for _, mk in ipairs({ json.array, function() return {} end }) do
        local ok = assert(encode(nest(1000, mk)))
        assert.equal(1000, #ok:match("^[%[{]*"))
        local s, err = encode(nest(1001, mk))
        assert.is_nil(s)
        assert.equal("cannot encode: nesting deeper than 1000 (cycle?)", err)
      end
      local c = {}
      c.self = c
      assert.equal("cannot encode: nesting deeper than 1000 (cycle?)", select(2, encode(c)))
      same_text(c)
    end)

    it("grows its buffer for big values", function()
      local big = {}
      for i = 1, 20000 do big[i] = { i, ("\1/x"):rep(i % 7), i + 0.25 } end
      same_text(big)
      same_text(("\n"):rep(100000))
      same_text(("a"):rep(100000))
    end)

    it("raises on misuse", function()
      assert.is_true(raises(core.encode, 1, 5))
      assert.equal("[]", core.encode({}, nil) == "{}" and "[]")
    end)

    it("re-encodes every fixture body like the Lua path", function()
      local n = 0
      local p = assert(io.popen("find '" .. support.fixtures .. "' -type f | sort"))
      for path in p:lines() do
        local name = path:sub(#support.fixtures + 1)
        local texts = { support.read(name) }
        if name:match("%.sse$") then
          for _, ev in ipairs(support.sse(texts[1])) do texts[#texts + 1] = ev.data end
        elseif name:match("%.ndjson$") then
          for line in texts[1]:gmatch("[^\n]+") do texts[#texts + 1] = line end
        end
        for _, text in ipairs(texts) do
          local v = decode(text)
          if v ~= nil then
            local a = assert(encode(v))
            local b = assert(lua_encode(v))
            assert.same(decode(b), decode(a))
            n = n + 1
          end
        end
      end
      p:close()
      assert.is_true(n > 60, n)
    end)

    -- A random Lua value; ordered is false once an object has two keys
    -- (lua_next order then decides, and the Lua path may copy a table).
    local function gen_value(r)
      local ordered = true
      local strs = { "", "hi", "a/b", 'q"uote', "back\\slash", "\0\1\31\127", "é€😀", "\255\254", "\1luagent" }
      local floats = { 0.1, 1e300, -0.0, 0.5, 1 / 3, -2.5e-300, 2 ^ 53, 2 ^ 63, 1e15 + 0.5, 0.1 + 0.2, 123.456 }
      local ints = { 0, 1, -1, 99999999999999, 100000000000000, math.maxinteger, math.mininteger, 123456789012345678 }
      local function value(depth)
        local k = r(depth > 4 and 6 or 10)
        if k == 1 then return r(2) == 1 end
        if k == 2 then return ints[r(#ints)] * (r(2) == 1 and 1 or -1) + r(3) - 2 end
        if k == 3 then
          if r(3) == 1 then return string.unpack("<d", string.pack("<i8", r(1 << 30) * r(1 << 30) * 8 + r(1 << 20))) end
          return floats[r(#floats)]
        end
        if k == 4 then
          local b = {}
          for i = 1, r(12) - 1 do b[i] = r(3) == 1 and string.char(r(256) - 1) or strs[r(#strs)] end
          return table.concat(b)
        end
        if k == 5 then return r(2) == 1 and json.array() or {} end
        if k == 6 then return cjson_null end
        local t = k <= 8 and json.array() or {}
        local n = r(6) - 1
        for i = 1, n do
          if k <= 8 then
            t[i] = value(depth + 1)
          else
            t[strs[r(#strs)] .. r(4)] = value(depth + 1)
          end
        end
        if k == 8 and n > 2 and r(3) == 1 then t[2] = nil end   -- a hole
        if k > 8 then
          local keys = 0
          for _ in pairs(t) do keys = keys + 1 end
          if keys > 1 then ordered = false end
        end
        return t
      end
      return value(0), function() return ordered end
    end

    it("agrees with the Lua path on random values", function()
      local r = rng(424242)
      local exact = 0
      for _ = 1, 4000 do
        local v, ordered = gen_value(r)
        local a, aerr = encode(v)
        local b, berr = lua_encode(v)
        assert.equal(berr, aerr)
        if aerr == nil then
          if ordered() then
            assert.equal(b, a)
            exact = exact + 1
          end
          local da, db = decode(a), decode(b)
          assert.same(db, da)
        end
      end
      assert.is_true(exact > 1000, exact)
    end)
  end)
end)
