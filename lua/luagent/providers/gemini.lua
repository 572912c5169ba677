--- luagent.providers.gemini — the Gemini API (generativelanguage.googleapis.com,
--- v1beta generateContent / streamGenerateContent?alt=sse).
--- Messages become `contents` of `parts`, system messages `systemInstruction`,
--- tool calls functionCall parts and tool results functionResponse parts. The key
--- travels in the x-goog-api-key header, never in the URL.
local errors = require "luagent.errors"
local json = require "luagent.json"
local chunks = require "luagent.chunks"
local common = require "luagent.providers"
local embedding = require "luagent.providers.embedding"

---@type luagent.Provider
local M = {
  name = "gemini",
  env_key = "GEMINI_API_KEY",
  env_base = "GOOGLE_GEMINI_BASE_URL", -- google-genai SDK; base without /v1beta
  default_base = "https://generativelanguage.googleapis.com",
  framing = "sse",
  key_header = "x-goog-api-key",
}

local supported = {
  messages = true, stream = true, stream_options = true, max_tokens = true,
  max_completion_tokens = true, temperature = true, top_p = true, stop = true, n = true,
  seed = true, tools = true, tool_choice = true, response_format = true,
  presence_penalty = true, frequency_penalty = true, logprobs = true, top_logprobs = true,
}
-- non-standard keys translated here rather than passed through
local handled = { top_k = true, generationConfig = true }

-- Schema keywords the Gemini `parameters` Schema rejects ("Unknown name ...").
local schema_strip = { ["$schema"] = true, ["$id"] = true, additionalProperties = true,
                       strict = true, examples = true }

-- ---------------------------------------------------------------------------
-- Contents
-- ---------------------------------------------------------------------------

local mime_by_ext = { png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg",
                      gif = "image/gif", webp = "image/webp", pdf = "application/pdf" }

local function media_part(url, model)
  local mime, data = common.parse_data_url(url)
  if mime then return { inlineData = { mimeType = mime, data = data } } end
  if type(url) == "string" and (url:match("^https?://") or url:match("^gs://")) then
    local ext = url:match("%.(%w+)$") or url:match("%.(%w+)[?#]")
    return { fileData = { fileUri = url, mimeType = ext and mime_by_ext[ext:lower()] } }
  end
  return nil, common.bad_request(M.name, model, "image_url must be a data:, http(s) or gs:// URL")
end

local function user_parts(content, model)
  local parts = json.array()
  for _, part in ipairs(common.content_parts(content)) do
    local kind = type(part) == "table" and part.type
    local p, err
    if kind == "text" then p = { text = part.text }
    elseif kind == "image_url" then p, err = media_part(common.image_url(part), model)
    elseif kind == "file" and type(part.file) == "table" then
      p, err = media_part(part.file.file_data or part.file.file_id, model)
    else
      err = common.bad_request(M.name, model, "unsupported content part type " .. tostring(kind))
    end
    if not p then return nil, err end
    parts[#parts + 1] = p
  end
  return parts
end

local function thought_signature(tc)
  local extra = type(tc.extra_content) == "table" and tc.extra_content.google
  return type(extra) == "table" and extra.thought_signature or nil
end

local function model_parts(m, model)
  local parts = json.array()
  local text = common.text_of(m.content)
  if text ~= "" then parts[#parts + 1] = { text = text } end
  for _, tc in ipairs(type(m.tool_calls) == "table" and m.tool_calls or {}) do
    local fn = tc["function"] or {}
    local args, err = common.decode_arguments(fn.arguments, fn.name, M.name, model)
    if not args then return nil, err end
    -- Gemini 3 refuses a replayed function call without its thought signature
    parts[#parts + 1] = { functionCall = { name = fn.name, args = args },
                          thoughtSignature = thought_signature(tc) }
  end
  return parts
end

local function function_response(m, names)
  local text = common.text_of(m.content)
  local decoded = json.decode(text)
  -- `response` must be an object: a JSON object result is sent as is
  local response = json.is_object(decoded) and decoded or { content = text }
  return { functionResponse = { name = names[m.tool_call_id] or m.name, response = response } }
end

-- Consecutive turns of one role are merged: the responses to parallel function
-- calls must arrive in the same turn as the calls were made.
local function push(contents, role, parts)
  local last = contents[#contents]
  if last and last.role == role then
    for _, p in ipairs(parts) do last.parts[#last.parts + 1] = p end
  elseif #parts > 0 then
    contents[#contents + 1] = { role = role, parts = parts }
  end
end

-- OpenAI messages → Gemini contents (and the systemInstruction), or nil, err.
local function convert_messages(messages, model)
  local names = common.tool_names_by_id(messages)
  local system, contents = {}, json.array()
  for _, m in ipairs(messages) do
    local role, parts, err = m.role, nil, nil
    if role == "system" or role == "developer" then
      system[#system + 1] = common.text_of(m.content)
    elseif role == "user" then
      parts, err = user_parts(m.content, model)
      if not parts then return nil, err end
      push(contents, "user", parts)
    elseif role == "assistant" then
      parts, err = model_parts(m, model)
      if not parts then return nil, err end
      push(contents, "model", parts)
    elseif role == "tool" then
      push(contents, "user", json.array { function_response(m, names) })
    else
      return nil, common.bad_request(M.name, model, "unsupported message role '" .. role .. "'")
    end
  end
  local instruction
  if #system > 0 then instruction = { parts = json.array { { text = table.concat(system, "\n\n") } } } end
  return contents, instruction
end

-- ---------------------------------------------------------------------------
-- Tools and generation config
-- ---------------------------------------------------------------------------

-- Gemini refuses an OBJECT schema without properties, so a tool taking no
-- arguments must leave `parameters` out.
local function takes_arguments(params)
  if type(params) ~= "table" then return false end
  if type(params.properties) == "table" then return next(params.properties) ~= nil end
  return params.type ~= "object"
end

local function function_declaration(fn)
  local decl = { name = fn.name, description = fn.description }
  if takes_arguments(fn.parameters) then decl.parameters = common.fix_schema(fn.parameters, schema_strip) end
  return decl
end

local function convert_tools(tools)
  local decls, out = json.array(), json.array()
  for _, t in ipairs(tools) do
    if type(t["function"]) == "table" then
      decls[#decls + 1] = function_declaration(t["function"])
    else
      out[#out + 1] = t -- a native Gemini tool such as {googleSearch = {}}
    end
  end
  if #decls > 0 then table.insert(out, 1, { functionDeclarations = decls }) end
  return out
end

local function tool_config(choice)
  if choice == nil then return nil end
  local cfg
  if choice == "auto" then cfg = { mode = "AUTO" }
  elseif choice == "required" or choice == "any" then cfg = { mode = "ANY" }
  elseif choice == "none" then cfg = { mode = "NONE" }
  elseif type(choice) == "table" and type(choice["function"]) == "table" then
    cfg = { mode = "ANY", allowedFunctionNames = json.array { choice["function"].name } }
  else
    return nil
  end
  return { functionCallingConfig = cfg }
end

local function generation_config(params)
  local rf = params.response_format
  local json_out = type(rf) == "table" and (rf.type == "json_object" or rf.type == "json_schema")
  local schema = json_out and type(rf.json_schema) == "table" and rf.json_schema.schema
  return common.overlay(params.generationConfig, {
    maxOutputTokens = common.max_tokens(params), temperature = params.temperature,
    topP = params.top_p, topK = params.top_k, stopSequences = common.stop_list(params.stop),
    candidateCount = params.n, seed = params.seed, presencePenalty = params.presence_penalty,
    frequencyPenalty = params.frequency_penalty,
    responseLogprobs = params.logprobs and true or nil, logprobs = params.top_logprobs,
    responseMimeType = json_out and "application/json" or nil,
    responseJsonSchema = schema and common.fix_schema(schema) or nil,
  })
end

-- ---------------------------------------------------------------------------
-- Request
-- ---------------------------------------------------------------------------

-- The model as a path segment: "models/" dropped, anything unusual escaped.
local function model_path(model)
  model = model:gsub("^models/", "")
  return (model:gsub("[^%w%-%._]", function(c) return string.format("%%%02X", c:byte()) end))
end

--- The generateContent (or streamGenerateContent?alt=sse) request for the model.
function M.build_request(params, model, ctx)
  local dropped, err = common.check_request(params, supported, M.name, model)
  if not dropped then return nil, err end
  local contents, instruction = convert_messages(params.messages, model)
  if not contents then return nil, instruction end
  local stream = params.stream == true
  local body = {
    contents = contents, systemInstruction = instruction,
    generationConfig = generation_config(params),
    toolConfig = tool_config(params.tool_choice),
  }
  if type(params.tools) == "table" then body.tools = convert_tools(params.tools) end
  local path = "/v1beta/models/" .. model_path(model)
    .. (stream and ":streamGenerateContent?alt=sse" or ":generateContent")
  return common.request(M, params, model, ctx, {
    body = body, path = path, stream = stream, handled = handled, dropped = dropped,
  })
end

-- ---------------------------------------------------------------------------
-- Embeddings: POST /v1beta/models/{m}:batchEmbedContents
-- ---------------------------------------------------------------------------

local EMBED_SUPPORTED = { dimensions = true }

--- The batchEmbedContents request: one EmbedContentRequest per text
--- ({model = "models/m", content = {parts = {{text}}}, outputDimensionality}).
function M.build_embedding(params, model, ctx)
  local texts, dropped = embedding.start(params, EMBED_SUPPORTED, M.name, model)
  if not texts then return nil, dropped end
  local name = "models/" .. model:gsub("^models/", "")
  local requests = json.array()
  for i, s in ipairs(texts) do
    requests[i] = { model = name, content = { parts = json.array { { text = s } } },
                    outputDimensionality = params.dimensions }
  end
  return embedding.request(M, params, model, ctx, { requests = requests },
                           "/v1beta/models/" .. model_path(model) .. ":batchEmbedContents", dropped)
end

--- The embeddings response of a batchEmbedContents body
--- ({embeddings = [{values = [...]}]}; Gemini reports no token count).
function M.parse_embedding(status, body, model)
  local v, err = common.decode_response(M, status, body, model)
  if not v then return nil, err end
  return embedding.response(M.name, model, v.embeddings, "values", nil, body)
end

-- ---------------------------------------------------------------------------
-- Errors
-- ---------------------------------------------------------------------------

local status_map = {
  INVALID_ARGUMENT = "BadRequestError", FAILED_PRECONDITION = "BadRequestError",
  OUT_OF_RANGE = "BadRequestError", UNAUTHENTICATED = "AuthenticationError",
  PERMISSION_DENIED = "PermissionDeniedError", NOT_FOUND = "NotFoundError",
  RESOURCE_EXHAUSTED = "RateLimitError", INTERNAL = "InternalServerError",
  UNKNOWN = "InternalServerError", UNAVAILABLE = "ServiceUnavailableError",
  DEADLINE_EXCEEDED = "Timeout",
}

-- google.rpc details: RetryInfo's retryDelay ("37s") and ErrorInfo's reason.
local function read_details(details)
  local retry, reason
  for _, d in ipairs(type(details) == "table" and details or {}) do
    if type(d) == "table" then
      if type(d.retryDelay) == "string" then retry = tonumber(d.retryDelay:match("^(%d+%.?%d*)s$")) end
      reason = reason or d.reason
    end
  end
  return retry, reason
end

local function classify(status, e, reason)
  local etype, known = errors.type_for_status(status)
  if not known then etype = status_map[e.status] or etype end
  local m = type(e.message) == "string" and e.message:lower() or ""
  -- an invalid key is a 400 INVALID_ARGUMENT on this API
  if reason == "API_KEY_INVALID" or m:find("api key not valid", 1, true) then
    return "AuthenticationError"
  end
  if etype == "BadRequestError" and (m:find("exceeds the maximum number of tokens", 1, true)
      or m:find("input token count", 1, true)) then
    return "ContextWindowExceededError"
  end
  return etype
end

local function typed_error(status, headers, body, model, e)
  e = type(e) == "table" and e or {}
  local retry, reason = read_details(e.details)
  return errors.http_error {
    type = classify(status or (math.type(e.code) == "integer" and e.code or nil), e, reason),
    status = status, headers = headers, body = body, provider = M.name, model = model,
    message = e.message, provider_type = e.status, code = reason, retry_after = retry,
  }
end

--- The error of a failed response: {"error": {code, message, status, details}}
--- (sometimes wrapped in an array).
function M.parse_error(status, headers, body, model)
  local v = common.decode_body(body)
  local e = v and (v.error or (type(v[1]) == "table" and v[1].error))
  return typed_error(status, headers, body, model, e)
end

-- ---------------------------------------------------------------------------
-- Responses and stream
-- ---------------------------------------------------------------------------

local filtered = { SAFETY = true, RECITATION = true, BLOCKLIST = true, PROHIBITED_CONTENT = true,
                   SPII = true, IMAGE_SAFETY = true }

local function finish_reason(reason, had_tools)
  if reason == nil or reason == "FINISH_REASON_UNSPECIFIED" then return nil end
  if reason == "MAX_TOKENS" then return "length" end
  if filtered[reason] then return "content_filter" end
  return had_tools and "tool_calls" or "stop"
end

local function openai_usage(u)
  if type(u) ~= "table" then return nil end
  local thoughts = u.thoughtsTokenCount or 0
  local usage = chunks.usage(u.promptTokenCount or 0, (u.candidatesTokenCount or 0) + thoughts,
                             u.totalTokenCount)
  if thoughts > 0 then usage.completion_tokens_details = { reasoning_tokens = thoughts } end
  if (u.cachedContentTokenCount or 0) > 0 then
    usage.prompt_tokens_details = { cached_tokens = u.cachedContentTokenCount }
  end
  return usage
end

-- The delta of one candidate: its text, thoughts and complete function
-- calls, and whether it has any of them. (Runs for every streamed event:
-- the usual one text part makes no lists.)
local function candidate_delta(self, c, index)
  local delta, text, thought = {}, nil, nil
  local content = c.content
  local parts = type(content) == "table" and content.parts
  if type(parts) == "table" then
    for i = 1, #parts do
      local part = parts[i]
      if part == nil then break end                 -- a JSON null ends them, as ipairs would
      local call = part.functionCall
      if call ~= nil and type(call) == "table" then
        local n = self._tools[index] or 0
        self._tools[index] = n + 1
        local sig = part.thoughtSignature
        delta.tool_calls = delta.tool_calls or {}
        delta.tool_calls[#delta.tool_calls + 1] = {
          index = n, id = call.id or chunks.new_id("call_"), type = "function",
          ["function"] = { name = call.name, arguments = common.encode_arguments(call.args) },
          extra_content = sig and { google = { thought_signature = sig } } or nil,
        }
      else
        local t = part.text
        if t ~= nil and type(t) == "string" then
          if part.thought then thought = thought and thought .. t or t
          else text = text and text .. t or t end
        end
      end
    end
  end
  delta.content, delta.reasoning_content = text, thought
  local started = self._started
  if not started[index] then
    started[index] = true
    delta.role = "assistant"
    return delta, true
  end
  return delta, text ~= nil or thought ~= nil or delta.tool_calls ~= nil
end

local NONE = {}   -- the candidates of an event without any: read, never written

-- One SSE event: its chunk, false when it makes none, or nil, err. An
-- event makes one chunk at most: with several candidates (candidateCount),
-- each candidate that has something is a choice of that chunk.
local function feed(self, _, data)
  local v, err = self:decode(data)
  if not v then return nil, err end
  if v.error ~= nil then return nil, typed_error(nil, nil, chunks.text(data), self.model, v.error) end
  if not self._id_fixed or self.id == nil then   -- the first responseId names the stream
    self.id = v.responseId or self.id
    self._id_fixed = true
  end
  if v.modelVersion then self.model = v.modelVersion end
  if v.usageMetadata then self._usage = v.usageMetadata end
  local chunk
  local candidates = v.candidates
  if type(candidates) ~= "table" then candidates = NONE end
  local n = #candidates
  for i = 1, n do
    local c = candidates[i]
    if c == nil then break end                      -- a JSON null ends them, as ipairs would
    local index = c.index or 0
    local delta, any = candidate_delta(self, c, index)
    local finish = finish_reason(c.finishReason, (self._tools[index] or 0) > 0)
    if finish then self.done = true end
    if any or finish then
      local usage = finish and openai_usage(self._usage) or nil
      if not chunk then
        chunk = self:chunk(delta, finish, usage, index)
      else
        local choices = chunk.choices
        choices[#choices + 1] = { index = index, delta = delta, finish_reason = finish }
        if finish then self.finished = true end
        if chunk.usage == nil then chunk.usage = usage end
      end
    end
  end
  -- a blocked prompt has no candidates at all
  if n == 0 then
    local feedback = v.promptFeedback
    if type(feedback) == "table" and feedback.blockReason then
      self.done = true
      return self:chunk({ role = "assistant" }, "content_filter", openai_usage(self._usage))
    end
  end
  return chunk or false
end

--- A stream decoder (luagent.Decoder): one feed per SSE event.
M.decoder = chunks.decoder_type(M.name, feed, function(dec, opts)
  -- tool calls and the role sent, by candidate; whether the id is settled
  dec._tools, dec._started, dec._id_fixed = {}, {}, opts ~= nil and opts.id ~= nil
end)

--- The chat.completion of a non-streaming generateContent response.
function M.parse_response(status, body, model)
  local v, err = common.decode_response(M, status, body, model)
  if not v then return nil, err end
  local resp
  resp, err = M.decoder(model):build(body)
  if not resp then return nil, err end
  resp.usage = resp.usage or openai_usage(v.usageMetadata)
  return resp
end

-- ---------------------------------------------------------------------------
-- Encoding (for servers): OpenAI shape -> generateContent
-- ---------------------------------------------------------------------------

local reason_of = { stop = "STOP", length = "MAX_TOKENS", tool_calls = "STOP", content_filter = "SAFETY" }

-- usageMetadata from OpenAI usage (openai_usage's inverse).
local function gemini_usage(u)
  if type(u) ~= "table" then return nil end
  local cd = type(u.completion_tokens_details) == "table" and u.completion_tokens_details or {}
  local pd = type(u.prompt_tokens_details) == "table" and u.prompt_tokens_details or {}
  local thoughts, cached = cd.reasoning_tokens or 0, pd.cached_tokens or 0
  return { promptTokenCount = u.prompt_tokens or 0, candidatesTokenCount = (u.completion_tokens or 0) - thoughts,
           thoughtsTokenCount = thoughts > 0 and thoughts or nil, totalTokenCount = u.total_tokens,
           cachedContentTokenCount = cached > 0 and cached or nil }
end

-- The parts of one candidate: thoughts, text, whole function calls.
local function parts_of(thought, text, calls)
  local parts = json.array()
  if thought then parts[#parts + 1] = { text = thought, thought = true } end
  if text then parts[#parts + 1] = { text = text } end
  for _, c in ipairs(calls or {}) do
    local google = type(c.extra_content) == "table" and c.extra_content.google
    parts[#parts + 1] = { functionCall = { id = c.id, name = c.name, args = common.arguments_object(c.arguments) },
                          thoughtSignature = type(google) == "table" and google.thought_signature or nil }
  end
  return parts
end

--- A chat.completion as a non-streaming generateContent body.
function M.encode_response(response)
  local candidates = json.array()
  for i, ch in ipairs(response.choices or {}) do
    local m, calls = ch.message or {}, nil
    for j, tc in ipairs(m.tool_calls or {}) do
      local fn = tc["function"] or {}
      calls = calls or {}
      calls[j] = { id = tc.id, name = fn.name, arguments = fn.arguments, extra_content = tc.extra_content }
    end
    candidates[i] = { index = ch.index, finishReason = reason_of[ch.finish_reason],
      content = { role = "model", parts = parts_of(m.reasoning_content, m.content, calls) } }
  end
  return assert(json.encode { candidates = candidates, usageMetadata = gemini_usage(response.usage),
                              modelVersion = response.model, responseId = response.id })
end

-- The stream encoder: an event per chunk that has something, a candidate
-- per choice; function calls go whole, when their arguments are (or at the
-- finish). An event with a finish waits for the next chunk, which may be
-- OpenAI's usage-only one: its usage goes with the finish.
local Encoder = {}
Encoder.__index = Encoder

--- A stream encoder (luagent.Encoder): chunks as streamGenerateContent SSE events.
function M.encoder()
  return setmetatable({ calls = {}, started = {} }, Encoder)
end

local function flush(self)
  local held = self.held
  if not held then return "" end
  self.held = nil
  return common.sse_event(held)
end

--- The events of one chunk ("" when it makes none).
---@param c luagent.Chunk
---@return string
function Encoder:chunk(c)
  local choices = c.choices or {}
  if self.held and c.usage and choices[1] == nil then self.held.usageMetadata = gemini_usage(c.usage) end
  local out = flush(self)
  local candidates = json.array()
  for _, ch in ipairs(choices) do
    local index, d = ch.index or 0, ch.delta or {}
    local joiner = self.calls[index] or common.call_joiner()
    self.calls[index] = joiner
    if type(d.tool_calls) == "table" then joiner:add(d.tool_calls) end
    local calls = (ch.finish_reason or joiner:complete()) and joiner:take() or nil
    local text = type(d.content) == "string" and d.content or nil
    local thought = type(d.reasoning_content) == "string" and d.reasoning_content ~= "" and d.reasoning_content or nil
    if text or thought or calls or ch.finish_reason or not self.started[index] then
      self.started[index] = true
      candidates[#candidates + 1] = { index = index, finishReason = reason_of[ch.finish_reason],
        content = { role = "model", parts = parts_of(thought, text, calls) } }
    end
  end
  if candidates[1] == nil then return out end
  local event = { candidates = candidates, usageMetadata = gemini_usage(c.usage), modelVersion = c.model,
                  responseId = c.id }
  for _, cand in ipairs(candidates) do
    if cand.finishReason then self.held = event; return out end
  end
  return out .. common.sse_event(event)
end

--- The end: the event held for its usage, if any (the stream just ends).
---@return string
function Encoder:finish()
  return flush(self)
end

return M
