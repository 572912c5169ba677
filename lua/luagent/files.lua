--- luagent.files: large files in constant memory (llm.files).
---
---   for chunk, i in llm.files.chunks("big.txt", {size = 4000}) do ... end
---
--- `size` is the largest chunk in characters (UTF-8 code points; a byte
--- that is not valid UTF-8 counts as one). `by` (default "chars") says
--- where a chunk may end:
---   "chars"       after any character (never inside a UTF-8 sequence);
---   "lines"       after a newline, so lines stay whole; a line longer than
---                 `size` is cut between characters;
---   "paragraphs"  after a blank line; else after a newline; else between
---                 characters.
--- `overlap` (default 0) repeats up to that many CHARACTERS of the end of a
--- chunk at the start of the next, whatever `by` is: with "lines" or
--- "paragraphs", from the first line (paragraph) start inside those
--- characters, or the last `overlap` characters when none is. It must be
--- smaller than `size`, so chunks always move forward. With overlap 0, the
--- chunks concatenated are the file.
---
--- Only regular files are read: a FIFO, a device or a socket is refused
--- (opening or reading one could block every task). A file that cannot be
--- opened raises an error naming the path. The file is read in blocks
--- (`block` bytes, default 64 KiB): memory stays near 4 * size + block
--- bytes whatever the file's size, and after every MiB read the iterator
--- yields to the other tasks (inside a task).
local M = {}
local core = require "luagent.core"
local fcore = require "luagent.files.core"

local byte, sub, find, gmatch = string.byte, string.sub, string.find, string.gmatch
local utf8_offset = utf8.offset

local UNITS = { chars = true, lines = true, paragraphs = true }
local YIELD_EVERY = 1 << 20
local OPTIONS = { size = true, overlap = true, by = true, block = true }

-- ---------------------------------------------------------------------------
-- Characters
-- ---------------------------------------------------------------------------

local function is_cont(b) return b ~= nil and b >= 0x80 and b < 0xC0 end

-- The position just after n characters from pos (a stray continuation byte
-- counts as one character), or nil when buf holds fewer.
local function advance(buf, n, pos)
  while n > 0 and is_cont(byte(buf, pos)) do pos, n = pos + 1, n - 1 end
  if n == 0 then return pos end
  if pos > #buf then return nil end
  return utf8_offset(buf, n + 1, pos)
end

-- The position k characters before pos, not going below floor.
local function back(buf, k, pos, floor)
  while k > 0 and pos > floor do
    pos = pos - 1
    while pos > floor and is_cont(byte(buf, pos)) do pos = pos - 1 end
    k = k - 1
  end
  return pos
end

-- ---------------------------------------------------------------------------
-- Boundaries
-- ---------------------------------------------------------------------------

-- End (exclusive) of the last line / paragraph wholly inside w, or nil.
-- Linear time: a pattern starting with ".*" would backtrack from every
-- position (quadratic on text without newlines).
local function last_line_end(w)
  local s = find(w, "\n[^\n]*$")
  return s and s + 1 or nil
end

-- After a blank-line separator ending at e: a run of blank lines is one
-- separator, so the end moves past its last line.
local function para_end_from(w, e)
  while true do
    local _, x = find(w, "^[ \t\r]*\n", e)
    if not x then return e end
    e = x + 1
  end
end

local function last_para_end(w)
  local last
  for e in gmatch(w, "\n[ \t\r]*\n()") do last = e end
  return last and para_end_from(w, last) or nil
end

-- The first line (paragraph) start in [from, to) of the chunk w, or nil.
-- Searching w, not the whole buffer, keeps each step within the chunk.
local function line_start_in(w, from, to)
  local s = find(w, "\n", from - 1, true)
  if s and s + 1 < to then return s + 1 end
  return nil
end

local function para_start_in(w, from, to)
  local init = 1
  while true do
    local _, e = find(w, "\n[ \t\r]*\n", init)
    if not e or e + 1 >= to then return nil end
    local p = para_end_from(w, e + 1)
    if p >= from then return p < to and p or nil end
    init = e
  end
end

-- ---------------------------------------------------------------------------
-- The reader
-- ---------------------------------------------------------------------------

-- Reads until at least st.need bytes are buffered from st.pos, or the end.
local function fill(st)
  while not st.eof and #st.buf - st.pos + 1 < st.need do
    local data, err = st.f:read(st.block)
    if data then
      st.buf, st.pos = sub(st.buf, st.pos) .. data, 1
      st.read = st.read + #data
      if st.read >= YIELD_EVERY and core.current() then
        st.read = 0
        core.sleep(0)         -- a long file: let the other tasks run
      end
    elseif err then
      error("files.chunks: cannot read " .. st.path .. ": " .. err, 0)
    else
      st.eof = true
    end
  end
end

-- The end (exclusive) of the next chunk's window of `size` characters:
-- always a character start inside the buffer, or the end of the file.
local function window_end(st)
  local need = st.need
  while true do
    fill(st)
    local cut = advance(st.buf, st.size, st.pos)
    if st.eof or (cut and cut <= #st.buf) then
      st.need = need
      return cut or #st.buf + 1
    end
    st.need = st.need * 2     -- invalid UTF-8 made a "character" huge
  end
end

-- Where the chunk ends inside the window [pos, wend).
local function chunk_end(st, wend)
  if st.by == "chars" or (st.eof and wend > #st.buf) then return wend end
  local w = sub(st.buf, st.pos, wend - 1)
  local e = st.by == "paragraphs" and last_para_end(w) or nil
  e = e or last_line_end(w)
  return e and st.pos + e - 1 or wend
end

-- Where the chunk after [pos, cut) starts: `overlap` characters back,
-- then forward to the first line (paragraph) start in that span, if any.
local function next_start(st, chunk, cut)
  local k = st.overlap
  if k == 0 then return cut end
  local buf, by = st.buf, st.by
  local p = back(buf, k, cut, st.pos)
  if by == "chars" then return p > st.pos and p or cut end
  -- whole lines (paragraphs) only: from the first start in the span; a
  -- chunk cut short at a line may be shorter than the overlap: then all
  -- but its first line (paragraph), so chunks always move forward
  if p <= st.pos then p = st.pos + 1 end
  local base = st.pos - 1
  local q = (by == "lines" and line_start_in or para_start_in)(chunk, p - base, cut - base)
  return q and q + base or cut
end

local function next_chunk(st)
  if st.finished then return nil end
  fill(st)
  if st.pos > #st.buf then
    st.finished = true
    return nil
  end
  local cut = chunk_end(st, window_end(st))
  local chunk = sub(st.buf, st.pos, cut - 1)
  if st.eof and cut > #st.buf then
    st.finished = true
  else
    st.pos = next_start(st, chunk, cut)
  end
  st.index = st.index + 1
  return chunk, st.index
end

-- ---------------------------------------------------------------------------
-- Entry point
-- ---------------------------------------------------------------------------

local function check_opts(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then error("files.chunks: options must be a table", 3) end
  for k in pairs(opts) do
    if not OPTIONS[k] then
      error(("files.chunks: unknown option %q (size, overlap, by, block)"):format(tostring(k)), 3)
    end
  end
  local size, overlap, by, block = opts.size or 4000, opts.overlap or 0, opts.by or "chars", opts.block or 65536
  if math.type(size) ~= "integer" or size < 1 then
    error("files.chunks: size must be a positive integer (characters)", 3)
  end
  if not UNITS[by] then error('files.chunks: by must be "chars", "lines" or "paragraphs"', 3) end
  if math.type(overlap) ~= "integer" or overlap < 0 then
    error("files.chunks: overlap must be a non-negative integer", 3)
  end
  if overlap >= size then
    error("files.chunks: overlap must be smaller than size (both count characters)", 3)
  end
  if math.type(block) ~= "integer" or block < 1 then
    error("files.chunks: block must be a positive integer (bytes)", 3)
  end
  return size, overlap, by, block
end

--- An iterator over the chunks of a file: `chunk, index` per step. Raises
--- an error naming the path when the file cannot be opened or is not a
--- regular file. The file closes at the end, or when a for loop is left
--- early (the fourth value is a to-be-closed guard).
---@param path string
---@param opts? {size?: integer, overlap?: integer, by?: "chars"|"lines"|"paragraphs", block?: integer}
---@return (fun(): string?, integer?)|nil iterator
---@return any message_or_state
---@return any
---@return any closer
function M.chunks(path, opts)
  if type(path) ~= "string" then error("files.chunks: path must be a string", 2) end
  local size, overlap, by, block = check_opts(opts)
  local f, msg = fcore.open(path)
  if not f then error("files.chunks: cannot open " .. msg, 2) end
  local st = { f = f, path = path, buf = "", pos = 1, eof = false, index = 0, size = size, read = 0,
               overlap = overlap, by = by, block = block, need = 4 * size + 8 }
  local function close()
    if st.f then st.f:close() st.f = nil end
    st.finished = true
  end
  local function iter()
    if st.finished then return nil end
    local chunk, i = next_chunk(st)
    if st.finished then close() end
    return chunk, i
  end
  return iter, nil, nil, setmetatable({}, { __close = close, __gc = close })
end

return M
