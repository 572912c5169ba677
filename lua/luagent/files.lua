--- luagent.files: large files in constant memory (llm.files).
---
---   for chunk, i in assert(llm.files.chunks("big.txt", {size = 4000})) do ... end
---
--- `size` is the largest chunk in characters (UTF-8 code points; a byte
--- that is not valid UTF-8 counts as one). `by` says where a chunk may end:
---   "chars"       after any character (never inside a UTF-8 sequence);
---   "lines"       after a newline, so lines stay whole; a line longer than
---                 `size` is cut between characters;
---   "paragraphs"  after a blank line; else after a newline; else between
---                 characters.
--- `overlap` repeats the end of each chunk at the start of the next, counted
--- in the same unit as `by`: characters, lines or paragraphs (at most all
--- but one of the previous chunk's lines or paragraphs, so chunks always
--- move forward). With overlap 0, the chunks concatenated are the file.
---
--- The file is read in blocks (`block` bytes, default 64 KiB): memory stays
--- near 4 * size + block bytes whatever the file's size.
local M = {}

local byte, sub, find, match = string.byte, string.sub, string.find, string.match
local utf8_offset = utf8.offset

local UNITS = { chars = true, lines = true, paragraphs = true }
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
local function last_line_end(w) return match(w, ".*\n()") end
local function last_para_end(w) return match(w, ".*\n[ \t\r]*\n()") end

-- Start positions of the lines / paragraphs of a chunk (the first is 1).
local function line_starts(chunk)
  local starts = { 1 }
  for p in chunk:gmatch("\n()") do
    if p <= #chunk then starts[#starts + 1] = p end
  end
  return starts
end

local function para_starts(chunk)
  local starts = { 1 }
  for p in chunk:gmatch("\n[ \t\r]*\n()") do
    -- a run of blank lines is one separator: start after its last line
    if p <= #chunk and not find(chunk, "^[ \t\r]*\n", p) then starts[#starts + 1] = p end
  end
  return starts
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

-- Where the chunk after [pos, cut) starts, given the overlap.
local function next_start(st, chunk, cut)
  local k = st.overlap
  if k == 0 then return cut end
  if st.by == "chars" then
    local p = back(st.buf, k, cut, st.pos)
    return p > st.pos and p or cut
  end
  local starts = st.by == "lines" and line_starts(chunk) or para_starts(chunk)
  k = math.min(k, #starts - 1)
  if k == 0 then return cut end
  return st.pos + starts[#starts - k + 1] - 1
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
  if by == "chars" and overlap >= size then
    error("files.chunks: overlap must be smaller than size", 3)
  end
  if math.type(block) ~= "integer" or block < 1 then
    error("files.chunks: block must be a positive integer (bytes)", 3)
  end
  return size, overlap, by, block
end

--- An iterator over the chunks of a file: `chunk, index` per step. Returns
--- nil, message, code (like io.open) when the file cannot be opened. The
--- file closes at the end, or when a for loop is left early (the fourth
--- value is a to-be-closed guard).
---@param path string
---@param opts? {size?: integer, overlap?: integer, by?: "chars"|"lines"|"paragraphs", block?: integer}
---@return (fun(): string?, integer?)|nil iterator
---@return any message_or_state
---@return any
---@return any closer
function M.chunks(path, opts)
  if type(path) ~= "string" then error("files.chunks: path must be a string", 2) end
  local size, overlap, by, block = check_opts(opts)
  local f, msg, code = io.open(path, "rb")
  if not f then return nil, msg, code end
  local st = { f = f, path = path, buf = "", pos = 1, eof = false, index = 0, size = size,
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
