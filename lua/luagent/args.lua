--- luagent.args: the small command-line parser of the example scripts.
---
---   local opts = llm.args(arg, {model = "mock/luagent-mock", ["mock-delay"] = 0.02},
---                         "usage: luagent scripts/x.lua [--model provider/name]")
---   opts.model, opts.mock_delay, opts.mock, opts[1] ...
---
--- `--name value` and `--name=value` set an option that has a default; the
--- value takes the default's type (a number default wants a number). A
--- boolean default makes `--name` a flag. Dashes become underscores in the
--- result. Positional arguments are opts[1..n]. `opts.mock` is true when
--- the model is a mock/ model (scripts then script the mock's answers).
--- `--help` prints the usage and exits 0; a bad option prints it to stderr
--- and exits 2.
local M = {}

local function fail(usage, msg)
  io.stderr:write(msg, "\n", usage or "", usage and "\n" or "")
  os.exit(2)
end

local function convert(name, raw, default, usage)
  local t = type(default)
  if t == "number" then
    local n = tonumber(raw)
    if not n then fail(usage, ("--%s wants a number, got %q"):format(name, raw)) end
    return n
  elseif t == "boolean" then
    if raw == "true" or raw == "1" then return true end
    if raw == "false" or raw == "0" then return false end
    fail(usage, ("--%s wants true or false, got %q"):format(name, raw))
  end
  return raw
end

--- Parses argv (the script's `arg`) against defaults; see the module doc.
---@param argv table
---@param defaults? table<string, string|number|boolean>
---@param usage? string
---@return table opts
function M.parse(argv, defaults, usage)
  if type(argv) ~= "table" then error("llm.args: argv must be the script's arg table", 2) end
  defaults = defaults or {}
  local opts = {}
  for k, v in pairs(defaults) do opts[k:gsub("-", "_")] = v end
  local i = 1
  while argv[i] ~= nil do
    local a = argv[i]
    local name, value = a:match("^%-%-([%w][%w%-_]*)=(.*)$")
    name = name or a:match("^%-%-([%w][%w%-_]*)$")
    if a == "--help" or a == "-h" then
      io.write(usage or "no help for this script", "\n")
      os.exit(0)
    elseif name then
      local default = defaults[name]
      if default == nil then fail(usage, "unknown option --" .. name) end
      if value == nil and type(default) == "boolean" then
        value = true
      elseif value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then fail(usage, ("--%s needs a value"):format(name)) end
      end
      if type(value) == "string" then value = convert(name, value, default, usage) end
      opts[name:gsub("-", "_")] = value
    else
      opts[#opts + 1] = a
    end
    i = i + 1
  end
  if type(opts.model) == "string" then opts.mock = opts.model:match("^mock/") ~= nil end
  return opts
end

return M
