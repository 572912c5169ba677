-- files_bench.lua: llm.files.chunks reads a 1 GB file in constant memory.
--   build/luagent bench/files_bench.lua [--mb 1024] [--by chars|lines|paragraphs] [--size 4000]
-- Writes a file of mixed UTF-8 text in /tmp, chunks it, checks that every
-- chunk is valid UTF-8 and that the chunks add up to the file, prints the
-- peak resident set size (VmHWM from /proc/self/status), deletes the file,
-- and fails if the peak passed 50 MB. Not part of `make test`.
local llm = require "luagent"

local opts = llm.args(arg, { mb = 1024, by = "chars", size = 4000 },
  "usage: luagent bench/files_bench.lua [--mb n] [--by chars|lines|paragraphs] [--size n]")
local LIMIT_KB = 50 * 1024

local function status_kb(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+) kB"))
end

-- 1 MiB of text: ASCII, accents, CJK, emoji, lines and paragraphs.
local function block()
  local line = "Streams flow — été, œuvre, 流れる川, 🚀 tokens arrive one by one.\n"
  local parts, n = {}, 0
  while n < (1 << 20) do
    local piece = (#parts % 7 == 6) and "\n" or line
    parts[#parts + 1] = piece
    n = n + #piece
  end
  return table.concat(parts):sub(1, 1 << 20)
end

local path = ("/tmp/luagent-files-bench-%d.txt"):format(os.time())
local t0 = llm.now()
do
  local f = assert(io.open(path, "wb"))
  local b = block()
  -- keep the cut inside ASCII so every block joins into valid UTF-8
  local cut = #b
  while b:byte(cut) >= 0x80 do cut = cut - 1 end
  b = b:sub(1, cut) .. (" "):rep(#b - cut)
  for _ = 1, opts.mb do assert(f:write(b)) end
  f:close()
end
local bytes = opts.mb * (1 << 20)
print(("wrote %d MB in %.1f s"):format(opts.mb, llm.now() - t0))
print(("VmHWM before chunking: %d kB"):format(status_kb("VmHWM")))

local t1 = llm.now()
local chunks, total, bad = 0, 0, 0
local ok, err = pcall(function()
  for chunk in assert(llm.files.chunks(path, { size = math.tointeger(opts.size), by = opts.by })) do
    chunks = chunks + 1
    total = total + #chunk
    if not utf8.len(chunk) then bad = bad + 1 end
  end
end)
local secs = llm.now() - t1
os.remove(path)
if not ok then error(err, 0) end

local hwm = status_kb("VmHWM")
print(("chunked %d MB by %s (size %d): %d chunks in %.1f s (%.0f MB/s)")
  :format(opts.mb, opts.by, opts.size, chunks, secs, opts.mb / secs))
print(("VmHWM (peak RSS): %d kB = %.1f MB (limit 50 MB)"):format(hwm, hwm / 1024))
assert(total == bytes, ("chunks hold %d bytes, the file %d"):format(total, bytes))
assert(bad == 0, bad .. " chunks were not valid UTF-8")
assert(hwm < LIMIT_KB, "peak RSS over 50 MB")
print("ok")
