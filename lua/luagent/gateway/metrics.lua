--- luagent.gateway.metrics — counters, gauges and histograms rendered in
--- the Prometheus text exposition format (version 0.0.4): `# HELP` and
--- `# TYPE` lines, then one sample per label set; histograms as cumulative
--- `_bucket{le=...}` samples with `_sum` and `_count`.
local M = {}

---@class luagent.Metrics
local Registry = {}
Registry.__index = Registry

---@class luagent.Metric
local Metric = {}
Metric.__index = Metric

-- Label values escape backslash, double quote and newline (the format's
-- only escapes); HELP text escapes backslash and newline.
local function escape_label(v)
  return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function escape_help(v)
  return (v:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

local function number(v)
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v ~= v then return "NaN" end
  if math.type(v) == "integer" then return tostring(v) end
  return ("%.17g"):format(v)
end

-- One series per distinct label tuple, keyed by the rendered label text so
-- that rendering needs no second pass.
local function label_text(names, values)
  if #names == 0 then return "" end
  local parts = {}
  for i, n in ipairs(names) do
    local v = values[i]
    if v == nil then error(("metric label '%s' has no value"):format(n), 3) end
    parts[i] = ('%s="%s"'):format(n, escape_label(v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function new_metric(reg, kind, name, help, labels, buckets)
  assert(name:match("^[%a_:][%w_:]*$"), "bad metric name " .. name)
  if reg._by_name[name] then error("metric defined twice: " .. name, 3) end
  local m = setmetatable({ kind = kind, name = name, help = help, labels = labels or {},
                           buckets = buckets, series = {}, order = {}, index = {} }, Metric)
  reg._by_name[name] = m
  reg._list[#reg._list + 1] = m
  return m
end

-- A series: a counter's or gauge's value, or a histogram's counts (each
-- bucket counts the observations that fell in it alone; render sums them).
local Value = {}
Value.__index = Value

--- Adds v (default 1) to the series.
function Value:inc(v) self.value = self.value + (v or 1) end

--- Sets the series (a gauge).
function Value:set(v) self.value = v end

local Histo = {}
Histo.__index = Histo

--- Records one observation.
function Histo:observe(v)
  local b = self.buckets
  for i = 1, #b do
    if v <= b[i] then self.counts[i] = self.counts[i] + 1 break end
  end
  self.sum = self.sum + v
  self.count = self.count + 1
end

-- The series of a label tuple, made (and its text rendered) on first use.
local function new_series(m, values)
  local key = label_text(m.labels, values)
  local s = m.series[key]
  if not s then
    if m.kind == "histogram" then
      local counts = {}
      for i = 1, #m.buckets do counts[i] = 0 end
      s = setmetatable({ counts = counts, sum = 0, count = 0, buckets = m.buckets }, Histo)
    else
      s = setmetatable({ value = 0 }, Value)
    end
    m.series[key] = s
    m.order[#m.order + 1] = key
  end
  return s
end

-- The series of the label values `...`. A gateway request touches seven
-- series: rendering their label text on every touch was a fifth of its
-- Lua work per request, so m.index maps the raw values, one level per
-- label, to the series once it exists (NaN cannot be a key: such a tuple
-- is looked up by its text every time).
local function series(m, ...)
  local n, node = #m.labels, m.index
  if n == 0 then return m.series[""] or new_series(m, {}) end
  for i = 1, n do
    node = node[(select(i, ...))]
    if node == nil then break end
  end
  if node ~= nil then return node end
  local values = { ... }
  local s = new_series(m, values)
  node = m.index
  for i = 1, n do
    local v = values[i]
    if v ~= v then break end
    if i == n then node[v] = s else
      node[v] = node[v] or {}
      node = node[v]
    end
  end
  return s
end

--- Adds v (default 1) to a counter or gauge; label values in the order the
--- metric declared its label names.
function Metric:inc(v, ...)
  series(self, ...):inc(v)
end

--- Sets a gauge.
function Metric:set(v, ...)
  series(self, ...).value = v
end

--- Records one observation in a histogram.
function Metric:observe(v, ...)
  series(self, ...):observe(v)
end

--- The series of the label values `...`, to update without finding it
--- again (:inc(v), :set(v), or a histogram's :observe(v)): a caller that
--- touches the same series on every request keeps it.
---@return table series
function Metric:bind(...)
  return series(self, ...)
end

--- The current value of a counter or gauge series (0 when never touched).
function Metric:get(...)
  local s = self.series[label_text(self.labels, { ... })]
  return s and (s.value or s.count) or 0
end

local function with_le(key, le)
  local l = ('le="%s"'):format(le)
  if key == "" then return "{" .. l .. "}" end
  return key:sub(1, -2) .. "," .. l .. "}"
end

local function render_metric(m, out)
  out[#out + 1] = ("# HELP %s %s"):format(m.name, escape_help(m.help))
  out[#out + 1] = ("# TYPE %s %s"):format(m.name, m.kind)
  for _, key in ipairs(m.order) do
    local s = m.series[key]
    if m.kind == "histogram" then
      local n = 0
      for i, le in ipairs(m.buckets) do
        n = n + s.counts[i]
        out[#out + 1] = ("%s_bucket%s %d"):format(m.name, with_le(key, number(le)), n)
      end
      out[#out + 1] = ("%s_bucket%s %d"):format(m.name, with_le(key, "+Inf"), s.count)
      out[#out + 1] = ("%s_sum%s %s"):format(m.name, key, number(s.sum))
      out[#out + 1] = ("%s_count%s %d"):format(m.name, key, s.count)
    else
      out[#out + 1] = ("%s%s %s"):format(m.name, key, number(s.value))
    end
  end
end

--- The whole registry in the text exposition format.
---@return string
function Registry:render()
  local out = {}
  for _, m in ipairs(self._list) do render_metric(m, out) end
  out[#out + 1] = ""
  return table.concat(out, "\n")
end

---@return luagent.Metric
function Registry:counter(name, help, labels) return new_metric(self, "counter", name, help, labels) end
---@return luagent.Metric
function Registry:gauge(name, help, labels) return new_metric(self, "gauge", name, help, labels) end
---@return luagent.Metric
function Registry:histogram(name, help, labels, buckets)
  assert(type(buckets) == "table" and #buckets > 0, "a histogram needs buckets")
  for i = 2, #buckets do assert(buckets[i] > buckets[i - 1], "buckets must increase") end
  return new_metric(self, "histogram", name, help, labels, buckets)
end

--- The content type a /metrics response carries.
M.content_type = "text/plain; version=0.0.4; charset=utf-8"

--- A new, empty registry.
---@return luagent.Metrics
function M.new()
  return setmetatable({ _by_name = {}, _list = {} }, Registry)
end

return M
