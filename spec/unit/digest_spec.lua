-- luagent.digest's base64 (libcrypto's EVP_EncodeBlock, a block at a time).
local digest = require "luagent.digest"

-- A plain reference encoder, to check inputs past digest.c's block size.
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function reference(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    for k = 3, 0, -1 do
      local v = (n >> (6 * k)) & 63
      out[#out + 1] = B64:sub(v + 1, v + 1)
    end
    if not b then out[#out - 1], out[#out] = "=", "=" elseif not c then out[#out] = "=" end
  end
  return table.concat(out)
end

describe("digest.base64", function()
  it("encodes RFC 4648's test vectors", function()
    local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
                      fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" }
    for plain, enc in pairs(vectors) do assert.are.equal(enc, digest.base64(plain)) end
  end)

  it("encodes binary bytes and inputs longer than one block, unbroken", function()
    for _, n in ipairs({ 1, 255, 12287, 12288, 12289, 40001 }) do
      local t = {}
      for i = 0, n - 1 do t[#t + 1] = string.char((i * 7 + i // 3) % 256) end
      local s = table.concat(t)
      local got = digest.base64(s)
      assert.are.equal(4 * ((n + 2) // 3), #got)
      assert.are.equal(reference(s), got)
      assert.is_nil(got:find("\n"))
    end
  end)

  it("refuses a value that is not a string", function()
    assert.has_error(function() digest.base64({}) end)
  end)
end)
