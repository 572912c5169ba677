-- llm.files.chunks: constant-memory chunking, UTF-8 safe, with overlap.
local llm = require "luagent"
local servers = require "servers"
local files = llm.files

local function write_tmp(content)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  return path
end

-- Every chunk of content under opts, as a list.
local function chunks_of(content, opts)
  local path = write_tmp(content)
  local out, idx = {}, {}
  for c, i in assert(files.chunks(path, opts)) do
    out[#out + 1] = c
    idx[#idx + 1] = i
  end
  os.remove(path)
  for i, v in ipairs(idx) do assert.are.equal(i, v, "chunk index") end
  return out
end

local function ulen(s) return assert(utf8.len(s), "chunk is not valid UTF-8: " .. ("%q"):format(s)) end

local MULTI = { "é", "€", "😀" }   -- 2, 3 and 4 bytes

describe("llm.files.chunks #unit", function()
  after_each(function() servers.assert_clean(assert) end)

  it("never splits a UTF-8 character, wherever it sits near the cut", function()
    for _, ch in ipairs(MULTI) do
      for size = 1, 6 do
        for pos = 1, 2 * size + 2 do
          local s = ("a"):rep(pos - 1) .. ch .. ("b"):rep(2 * size + 3 - pos) .. ch
          for _, block in ipairs({ 1, 2, 3, 5, 64 }) do
            local got = chunks_of(s, { size = size, block = block })
            assert.are.equal(s, table.concat(got))
            for i, c in ipairs(got) do
              local n = ulen(c)
              if i < #got then assert.are.equal(size, n) else assert.is_true(n >= 1 and n <= size) end
            end
          end
        end
      end
    end
  end)

  it("counts size in characters, not bytes", function()
    local got = chunks_of(("€"):rep(10), { size = 4 })
    assert.are.same({ ("€"):rep(4), ("€"):rep(4), ("€"):rep(2) }, got)
  end)

  it("overlaps chunks by characters", function()
    local s = "0123456789é€😀abcdefghij"
    for overlap = 0, 4 do
      local got = chunks_of(s, { size = 5, overlap = overlap, block = 3 })
      local rebuilt = got[1]
      for i = 2, #got do
        local prev, cur = got[i - 1], got[i]
        local tail = prev:sub(utf8.offset(prev, -overlap) or 1)
        if overlap == 0 then tail = "" end
        assert.are.equal(tail, cur:sub(1, #tail), "chunk " .. i .. " starts with the overlap")
        rebuilt = rebuilt .. cur:sub(#tail + 1)
        ulen(cur)
      end
      assert.are.equal(s, rebuilt)
    end
  end)

  it("keeps lines whole with by = lines, and cuts an overlong line between characters", function()
    local s = "one\ntwo\nthree\n" .. ("é"):rep(9) .. "\nend"
    local got = chunks_of(s, { size = 9, by = "lines", block = 2 })
    assert.are.same({ "one\ntwo\n", "three\n", ("é"):rep(9), "\nend" }, got)
    assert.are.equal(s, table.concat(got))
  end)

  it("overlaps by whole lines within overlap characters, and always moves forward", function()
    local s = "l1\nl2\nl3\nl4\nl5\n"
    local got = chunks_of(s, { size = 9, by = "lines", overlap = 3 })
    assert.are.same({ "l1\nl2\nl3\n", "l3\nl4\nl5\n" }, got)
    -- no whole line fits in 2 characters: no overlap, never half a line
    got = chunks_of(s, { size = 9, by = "lines", overlap = 2 })
    assert.are.same({ "l1\nl2\nl3\n", "l4\nl5\n" }, got)
    -- the lines that fit in 5 characters: one
    got = chunks_of(s, { size = 6, by = "lines", overlap = 5 })
    assert.are.same({ "l1\nl2\n", "l2\nl3\n", "l3\nl4\n", "l4\nl5\n" }, got)
  end)

  it("counts overlap in characters whatever by is: it never multiplies the text", function()
    -- the README's example on 200 short paragraphs: overlap 200 with
    -- by = "paragraphs" once meant 200 paragraphs (the text 6.75 times over)
    local paras = {}
    for i = 1, 2000 do paras[i] = ("paragraph %d has a few words in it."):format(i) end
    local s = table.concat(paras, "\n\n") .. "\n"
    for _, by in ipairs({ "chars", "lines", "paragraphs" }) do
      local got = chunks_of(s, { size = 4000, overlap = 200, by = by })
      local total = #table.concat(got)
      assert.is_true(total <= #s * (1 + 200 / (4000 - 200)) + 4000,
        by .. ": " .. total .. " bytes of chunks for " .. #s)
      for i = 2, #got do assert.is_true(#got[i] <= 4000 * 2) end
    end
  end)

  it("cuts at blank lines with by = paragraphs, then at lines, then between characters", function()
    local s = "p1 a\np1 b\n\np2\n\n\np3 is long\nline two\n"
    local got = chunks_of(s, { size = 12, by = "paragraphs", block = 4 })
    assert.are.same({ "p1 a\np1 b\n\n", "p2\n\n\n", "p3 is long\n", "line two\n" }, got)
    assert.are.equal(s, table.concat(got))
  end)

  it("overlaps by paragraphs", function()
    local s = "A\n\nB\n\nC\n\nD\n\n"
    local got = chunks_of(s, { size = 6, by = "paragraphs", overlap = 3 })
    assert.are.same({ "A\n\nB\n\n", "B\n\nC\n\n", "C\n\nD\n\n" }, got)
  end)

  it("gives no chunk for an empty file, and one for a short one", function()
    assert.are.same({}, chunks_of("", {}))
    assert.are.same({ "hi" }, chunks_of("hi", {}))
  end)

  it("keeps invalid UTF-8 bytes and still moves forward", function()
    local s = "\x80\x80ab\xff\xfe" .. ("\x80"):rep(20) .. "cd"
    for size = 1, 5 do
      assert.are.equal(s, table.concat(chunks_of(s, { size = size, block = 3 })))
      local got = chunks_of(s, { size = size, overlap = size - 1 })
      assert.is_true(#got <= #s)                   -- each chunk moved forward
      assert.are.equal(s:sub(1, #got[1]), got[1])
    end
  end)

  it("raises naming the path for a missing file, so a for loop says why", function()
    local ok, e = pcall(function()
      for _ in files.chunks("/nonexistent/dir/file.txt") do end
    end)
    assert.is_false(ok)
    assert.matches("files.chunks: cannot open /nonexistent/dir/file.txt: No such file", e)
    assert.not_matches("nil value", e)
  end)

  it("refuses a FIFO without blocking the loop: other tasks tick, llm.timeout fires", function()
    local path = os.tmpname()
    os.remove(path)
    assert(os.execute("mkfifo " .. path))
    local ticks = 0
    local ticker = llm.spawn(function() while true do llm.sleep(0.01) ticks = ticks + 1 end end)
    local r, err = llm.timeout(2, function()
      local ok, e = pcall(files.chunks, path)
      return ok, e
    end)
    llm.sleep(0.05)
    ticker:cancel()
    os.remove(path)
    assert.is_false(r)
    assert.matches("a FIFO, not a regular file", err)
    assert.is_true(ticks >= 3)
    -- and a directory
    local ok, e = pcall(files.chunks, "/tmp")
    assert.is_false(ok)
    assert.matches("directory", e)
  end)

  it("is linear on text without newlines, by lines and by paragraphs, and lets tasks run", function()
    local s = ("abcdefghij"):rep(40000)          -- 400 KB, no newline
    local function time(by)
      local t0 = os.clock()
      local got = chunks_of(s, { size = 4000, by = by, overlap = 100 })
      assert.are.equal(s:sub(1, 4000), got[1])
      return os.clock() - t0
    end
    local chars = time("chars")
    for _, by in ipairs({ "lines", "paragraphs" }) do
      local t = time(by)
      -- quadratic was about 10 s here; linear is within a few times chars
      assert.is_true(t < 5 * chars + 0.05, ("%s: %.3f s, chars %.3f s"):format(by, t, chars))
    end
    -- long work yields: a ticking task runs while 4 MB are chunked
    local big = write_tmp(("x"):rep(4 << 20))
    local ticks = 0
    local ticker = llm.spawn(function() while true do llm.sleep(0) ticks = ticks + 1 end end)
    for _ in files.chunks(big, { size = 100000, by = "lines" }) do end
    ticker:cancel()
    os.remove(big)
    assert.is_true(ticks >= 3, "ticks: " .. ticks)
  end)

  it("closes the file when a loop is left early, and stays finished", function()
    local path = write_tmp(("x"):rep(100))
    local iter
    do
      local f, s, c, closer = files.chunks(path, { size = 10 })
      iter = f
      for chunk in f, s, c, closer do
        assert.are.equal(10, #chunk)
        break
      end
    end
    assert.is_nil(iter())
    os.remove(path)
  end)

  it("reads in constant memory", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    local line = ("Le cœur a ses raisons. "):rep(40) .. "\n"
    for _ = 1, 20000 do f:write(line) end          -- about 19 MB
    f:close()
    collectgarbage()
    local base, peak, n = collectgarbage("count"), 0, 0
    for chunk in assert(files.chunks(path, { size = 4000, by = "lines" })) do
      n = n + #chunk
      peak = math.max(peak, collectgarbage("count") - base)
    end
    os.remove(path)
    assert.are.equal(#line * 20000, n)
    assert.is_true(peak < 8 * 1024, ("peak Lua heap growth %.0f KiB"):format(peak))
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() files.chunks(1) end, "files.chunks: path must be a string")
    assert.has_error(function() files.chunks("x", { size = 0 }) end,
      "files.chunks: size must be a positive integer (characters)")
    assert.has_error(function() files.chunks("x", { by = "words" }) end,
      'files.chunks: by must be "chars", "lines" or "paragraphs"')
    assert.has_error(function() files.chunks("x", { size = 5, overlap = 5 }) end,
      "files.chunks: overlap must be smaller than size (both count characters)")
    assert.has_error(function() files.chunks("x", { size = 5, overlap = 5, by = "lines" }) end,
      "files.chunks: overlap must be smaller than size (both count characters)")
    assert.has_error(function() files.chunks("x", { chunk_size = 5 }) end,
      'files.chunks: unknown option "chunk_size" (size, overlap, by, block)')
  end)
end)
