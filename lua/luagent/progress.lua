--- luagent.progress: spinners and progress bars (llm.progress).
---
---   local sp = llm.progress.spinner("Generating response...")
---   ... sp:stop("Response complete!")          -- or sp:stop() to erase it
---   local bar = llm.progress.bar{total = 10, text = "Sections"}
---   bar:inc() ... bar:done()
---   llm.progress.print("a line")                -- prints above the widgets
---   llm.progress.until_first(stream_or_fn, text) -- spinner until the first token
---
--- Widgets draw on stderr, so stdout stays clean for piping. On a terminal
--- one shared renderer owns the bottom lines of the screen: every widget
--- alive has one line there, redrawn in place by a task that sleeps on the
--- loop (no thread). Elsewhere (a pipe, a file, CI logs) widgets print plain
--- lines instead: a spinner its text, a bar every 10% and when done.
--- NO_COLOR (https://no-color.org) turns colours off.
---
--- A widget belongs to the task that made it: when that task ends (an
--- error, a cancellation), its widgets go away with it, so a forgotten
--- spinner never keeps the process alive.
local core = require "luagent.core"

local M = {}

local spawn, sleep, now = core.spawn, core.sleep, core.now
local pack, unpack = table.pack, table.unpack

local FRAMES = { "⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏" }
local ESC = "\27["

-- ---------------------------------------------------------------------------
-- Formatting helpers
-- ---------------------------------------------------------------------------

local function ulen(s) return utf8.len(s) or #s end

-- s cut to at most n characters (never inside a UTF-8 sequence).
local function clip(s, n)
  if n < 1 then return "" end
  if ulen(s) <= n then return s end
  local cut = utf8.offset(s, n + 1)
  return cut and s:sub(1, cut - 1) or s
end

--- "0:07", "12:34", "1:02:03".
---@param s number seconds
---@return string
function M.format_duration(s)
  s = math.max(0, math.floor(s + 0.5))
  local h, m, sec = s // 3600, s % 3600 // 60, s % 60
  if h > 0 then return ("%d:%02d:%02d"):format(h, m, sec) end
  return ("%d:%02d"):format(m, sec)
end

local function format_rate(r)
  if r >= 100 then return ("%.0f/s"):format(r) end
  return ("%.1f/s"):format(r)
end

local function check_text(text, fname)
  if type(text) ~= "string" then
    error(("%s: text must be a string (got %s)"):format(fname, type(text)), 3)
  end
end

-- ---------------------------------------------------------------------------
-- Renderer: owns the bottom lines of one output
-- ---------------------------------------------------------------------------

---@class luagent.ProgressRenderer
local Renderer = {}
Renderer.__index = Renderer

--- A renderer: where and how widgets draw. The default one draws on
--- stderr; tests and hosts make their own.
---@param opts? {output?: file*|table, tty?: boolean, color?: boolean, interval?: number, width?: integer, clock?: fun():number, stdout?: file*|table}
---@return luagent.ProgressRenderer
function M.renderer(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("progress.renderer: expects a table of options", 2) end
  local output = opts.output or io.stderr
  if type(output) ~= "userdata" and (type(output) ~= "table" or not output.write) then
    error("progress.renderer: output must have a write method", 2)
  end
  local tty = opts.tty
  if tty == nil then
    tty = output == io.stderr and require("luagent.term.core").isatty(2)
  end
  local color = opts.color
  if color == nil then color = tty and (os.getenv("NO_COLOR") or "") == "" end
  local interval = opts.interval or 0.1
  if type(interval) ~= "number" or not (interval > 0) then
    error("progress.renderer: interval must be a positive number of seconds", 2)
  end
  return setmetatable({
    output = output, stdout = opts.stdout or io.stdout, tty = tty and true or false,
    color = color and true or false, interval = interval, width = opts.width,
    clock = opts.clock or now, widgets = {}, drawn = 0, frame = 1, task = nil,
  }, Renderer)
end

function Renderer:_write(s)
  self.output:write(s)
  if self.output.flush then self.output:flush() end
end

function Renderer:_paint(code, s)
  if not self.color then return s end
  return ESC .. code .. "m" .. s .. ESC .. "0m"
end

function Renderer:_columns()
  if self.width then return self.width end
  local cols = self.output == io.stderr and require("luagent.term.core").columns(2)
  return cols or 80
end

-- The escape sequence that moves back over the drawn block and clears it.
function Renderer:_erase_seq()
  if self.drawn == 0 then return "" end
  return ESC .. self.drawn .. "A\r" .. ESC .. "J"
end

--- Redraws every widget in place (terminal only), in one write.
function Renderer:draw()
  if not self.tty then return end
  local width = self:_columns() - 1
  local out = { self:_erase_seq() }
  for _, w in ipairs(self.widgets) do
    out[#out + 1] = clip(w:_line(self), width) .. "\n"
  end
  self.drawn = #self.widgets
  self:_write(table.concat(out))
end

local function ended(task)
  -- (the CLI's main task may lack the Task metatable: then it cannot be asked)
  if not task or getmetatable(task) == nil then return false end
  local st = task:status()
  return st == "done" or st == "failed" or st == "cancelled"
end

-- Removes the widgets nobody can stop any more: those whose owner task has
-- ended, or all of them when the ticker is the last task alive. True if
-- any went.
function Renderer:_reap()
  local orphans = core.debug().tasks <= 1
  local kept, gone = {}, false
  for _, w in ipairs(self.widgets) do
    if orphans or ended(w._owner) then
      w._stopped, gone = true, true
    else
      kept[#kept + 1] = w
    end
  end
  self.widgets = kept
  return gone
end

function Renderer:_ticker()
  while true do
    sleep(self.interval)
    self.frame = self.frame + 1
    if self:_reap() and #self.widgets == 0 then
      -- no erase: an error report may have been printed below the widgets
      self.drawn, self.task = 0, nil
      return
    end
    self:draw()
  end
end

function Renderer:_add(w)
  self.widgets[#self.widgets + 1] = w
  if not self.tty then return end
  self:draw()
  if not self.task or ended(self.task) then self.task = spawn(self._ticker, self) end
end

-- Takes w off the screen; `final` (if any) stays printed above the rest.
function Renderer:_remove(w, final)
  for i, x in ipairs(self.widgets) do
    if x == w then table.remove(self.widgets, i) break end
  end
  if not self.tty then
    if final then self:_write(final .. "\n") end
    return
  end
  local out = self:_erase_seq()
  self.drawn = 0
  if final then out = out .. clip(final, self:_columns() - 1) .. "\n" end
  self:_write(out)
  if #self.widgets > 0 then
    self:draw()
  elseif self.task then
    self.task:cancel()
    self.task = nil
  end
end

--- Prints a line on stdout above the widgets (like print), so output and
--- widgets never overwrite each other.
function Renderer:print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  local line = table.concat(parts, "\t") .. "\n"
  if self.tty and self.drawn > 0 then
    self:_write(self:_erase_seq())
    self.drawn = 0
    self.stdout:write(line)
    if self.stdout.flush then self.stdout:flush() end
    self:draw()
  else
    self.stdout:write(line)
    if self.stdout.flush then self.stdout:flush() end
  end
end

local default

--- The renderer widgets use when given none (stderr).
---@return luagent.ProgressRenderer
function M.default()
  default = default or M.renderer()
  return default
end

--- Replaces the default renderer (options as progress.renderer).
---@param opts table
function M.configure(opts)
  default = M.renderer(opts)
  return default
end

--- progress.print(...): see Renderer:print (default renderer).
function M.print(...) return M.default():print(...) end

local function renderer_of(opts, fname)
  local r = opts and opts.renderer
  if r == nil then return M.default() end
  if getmetatable(r) ~= Renderer then error(fname .. ": renderer must come from progress.renderer", 3) end
  return r
end

-- ---------------------------------------------------------------------------
-- Spinner
-- ---------------------------------------------------------------------------

---@class luagent.Spinner
local Spinner = {}
Spinner.__index = Spinner
Spinner.__name = "luagent.Spinner"

function Spinner:_line(r)
  return r:_paint("36", FRAMES[(r.frame - 1) % #FRAMES + 1]) .. " " .. self.text
end

--- A spinner showing text until :stop(). Also a to-be-closed value:
--- `local sp <close> = llm.progress.spinner("...")`.
---@param text string
---@param opts? {renderer?: luagent.ProgressRenderer}
---@return luagent.Spinner
function M.spinner(text, opts)
  check_text(text, "progress.spinner")
  local r = renderer_of(opts, "progress.spinner")
  local sp = setmetatable({ text = text, _r = r, _owner = core.current() }, Spinner)
  if not r.tty then r:_write(text .. "\n") end
  r:_add(sp)
  return sp
end

--- Changes the text.
---@param text string
function Spinner:update(text)
  check_text(text, "spinner:update")
  self.text = text
  if not self._stopped then self._r:draw() end
end

--- Stops the spinner; with final_text, leaves "✓ final_text" in its place,
--- otherwise erases it. Idempotent.
---@param final_text? string
function Spinner:stop(final_text)
  if final_text ~= nil then check_text(final_text, "spinner:stop") end
  if self._stopped then return end
  self._stopped = true
  local r = self._r
  local final = final_text
  if final and r.tty then final = r:_paint("32", "✓") .. " " .. final end
  r:_remove(self, final)
end

--- Stops the spinner leaving "✗ text" (a failure) in its place.
---@param text string
function Spinner:fail(text)
  check_text(text, "spinner:fail")
  if self._stopped then return end
  self._stopped = true
  local r = self._r
  r:_remove(self, r.tty and (r:_paint("31", "✗") .. " " .. text) or text)
end

Spinner.__close = function(self) self:stop() end

-- ---------------------------------------------------------------------------
-- Bar
-- ---------------------------------------------------------------------------

---@class luagent.Bar
local Bar = {}
Bar.__index = Bar
Bar.__name = "luagent.Bar"

local BAR_WIDTH = 24

-- "3/10 30% 1.5/s ETA 0:05" (what the bar knows so far).
function Bar:_stats(r, final)
  local elapsed = r.clock() - self._t0
  local rate = elapsed > 0 and self.n / elapsed or nil
  local parts = { self.total and ("%d/%d"):format(self.n, self.total) or tostring(self.n) }
  if self.total and self.total > 0 then
    parts[#parts + 1] = ("%d%%"):format(math.floor(100 * math.min(self.n, self.total) / self.total))
  end
  if final then
    parts[#parts + 1] = "in " .. M.format_duration(elapsed)
    if rate then parts[#parts + 1] = "(" .. format_rate(rate) .. ")" end
    return table.concat(parts, " ")
  end
  if rate then parts[#parts + 1] = format_rate(rate) end
  if rate and rate > 0 and self.total and self.n < self.total then
    parts[#parts + 1] = "ETA " .. M.format_duration((self.total - self.n) / rate)
  end
  return table.concat(parts, " ")
end

function Bar:_line(r)
  local prefix = self.text and (self.text .. " ") or ""
  if not self.total or self.total == 0 then return prefix .. self:_stats(r) end
  local fill = math.floor(BAR_WIDTH * math.min(self.n, self.total) / self.total)
  local bar = r:_paint("32", ("█"):rep(fill)) .. ("░"):rep(BAR_WIDTH - fill)
  return prefix .. "[" .. bar .. "] " .. self:_stats(r)
end

-- Off a terminal: one plain line each time another tenth is reached.
function Bar:_log(r)
  if r.tty or not self.total or self.total <= 0 then return end
  local step = math.floor(10 * math.min(self.n, self.total) / self.total)
  if step > self._step and step < 10 then    -- 100% is done()'s line
    self._step = step
    r:_write((self.text and (self.text .. ": ") or "") .. self:_stats(r) .. "\n")
  end
end

--- A progress bar: count, percentage, rate and ETA.
---@param opts {total?: integer, text?: string, renderer?: luagent.ProgressRenderer}
---@return luagent.Bar
function M.bar(opts)
  if type(opts) ~= "table" then error("progress.bar: expects a table {total=, text=}", 2) end
  local total = opts.total
  if total ~= nil and (math.type(total) ~= "integer" or total < 0) then
    error("progress.bar: total must be a non-negative integer", 2)
  end
  if opts.text ~= nil then check_text(opts.text, "progress.bar") end
  local r = renderer_of(opts, "progress.bar")
  local b = setmetatable({ total = total, text = opts.text, n = 0, _r = r, _step = 0,
                           _t0 = r.clock(), _owner = core.current() }, Bar)
  r:_add(b)
  return b
end

--- Sets the count to n.
---@param n integer
function Bar:update(n)
  if math.type(n) ~= "integer" or n < 0 then error("bar:update: n must be a non-negative integer", 2) end
  if self._stopped then return end
  self.n = n
  self:_log(self._r)
end

--- Adds k (default 1) to the count.
---@param k? integer
function Bar:inc(k)
  k = k or 1
  if math.type(k) ~= "integer" then error("bar:inc: k must be an integer", 2) end
  self:update(math.max(0, self.n + k))
end

--- Ends the bar, leaving its summary line. Idempotent.
---@param text? string replaces the bar's text in the summary
function Bar:done(text)
  if text ~= nil then check_text(text, "bar:done") end
  if self._stopped then return end
  self._stopped = true
  local r = self._r
  local label = text or self.text
  local summary = (label and (label .. (r.tty and " " or ": ")) or "") .. self:_stats(r, true)
  if r.tty then summary = r:_paint("32", "✓") .. " " .. summary end
  r:_remove(self, summary)
end

Bar.__close = function(self) self:done() end

-- ---------------------------------------------------------------------------
-- A spinner until the first token
-- ---------------------------------------------------------------------------

local function is_stream(v)
  return type(v) == "table" and type(v.next) == "function" and type(v.close) == "function"
end

local function has_content(c)
  local ch = type(c) == "table" and c.choices and c.choices[1]
  local d = ch and ch.delta
  return d ~= nil and ((d.content ~= nil and d.content ~= "") or d.tool_calls ~= nil)
end

-- Makes stream stop sp at its first content (or its end, failure, close
-- or collection). Instance fields shadow the class methods until then.
local function hook(stream, sp)
  local next_, close_ = stream.next, stream.close
  local function release()
    sp:stop()
    stream.next, stream.close, stream._progress = nil, nil, nil
  end
  stream.next = function(self)
    local r = pack(pcall(next_, self))
    if not r[1] then release() error(r[2], 0) end
    if r[2] == nil or has_content(r[2]) then release() end
    return unpack(r, 2, r.n)
  end
  stream.close = function(self) release() return close_(self) end
  stream._progress = setmetatable({}, { __gc = function() sp:stop() end })
  return stream
end

--- Shows a spinner until the first token arrives. With a stream, hooks it;
--- with a function, shows the spinner while fn(...) runs (connecting,
--- waiting for headers) and hooks the stream it returns, or stops when it
--- returns anything else. Returns what fn returns (or the stream).
--- text == true means "Generating response...".
---@param src table|function a stream, or a function returning one
---@param text string|true
---@return any ...
function M.until_first(src, text, ...)
  if text == true then text = "Generating response..." end
  check_text(text, "progress.until_first")
  if is_stream(src) then return hook(src, M.spinner(text)) end
  if type(src) ~= "function" and not (getmetatable(src) or {}).__call then
    error("progress.until_first: expects a stream or a function", 2)
  end
  local sp = M.spinner(text)
  local r = pack(pcall(src, ...))
  if not r[1] then sp:stop() error(r[2], 0) end
  if is_stream(r[2]) then hook(r[2], sp) else sp:stop() end
  return unpack(r, 2, r.n)
end

--- A shallow copy of completion parameters without `progress` (for
--- llm.completion's progress= parameter).
---@param p table
---@return table
function M.strip(p)
  local q = {}
  for k, v in pairs(p) do q[k] = v end
  q.progress = nil
  return q
end

return M
