--- npc.lua -- the minds of the NPCs of examples/npc (the game, main.c, runs
--- this script in its luagent runtime and pumps it with la_step once a frame).
---
--- In  (la_event_push): talk(npc, line), leave(npc), quit.
--- Out (llm.host.emit -> the game's la_on_event), payload "npc\ttext":
---   think (waiting for the model: the game shows a spinner), say (one
---   token of the reply), done, error (message), act (a tool the NPC used),
---   thought (the text so far of a background thought).
--- Tools: the game's C functions (la_register "game") through llm.agent.
---
--- Arguments (key=value): model=provider/name (default: the mock provider,
--- or the NPC_MODEL environment variable), bg_url=URL bg_n=N (N background
--- streams against an OpenAI-compatible server, looping until quit).
local llm = require "luagent"
local game = require "game"

local opts = {}
for _, a in ipairs{...} do
  local k, v = a:match("^([%w_]+)=(.*)$")
  if k then opts[k] = v end
end
local MODEL = (opts.model ~= nil and opts.model ~= "") and opts.model or os.getenv("NPC_MODEL")

local function emit(kind, id, text)
  llm.host.emit(kind, id .. "\t" .. (text or ""))
end

-- Personalities. `mock` is what the mock provider answers (a string, or an
-- error spec: the oracle's model is slow and overloaded); `acts` the tools
-- the mock model asks for; a real model decides for itself.
local NPCS = {
  guard = {
    system = "You are Bram, a gruff but fair gate guard in a small fantasy village. "
      .. "Answer in two sentences at most. If the player asks politely you open the "
      .. "north door with the open_door tool.",
    mock = "Hmph. A traveller at this hour? Mind your manners and I will open the north door for you.",
    acts = { { name = "open_door", arguments = { door = "north" }, id = "a1" } },
    thoughts = { "Another quiet night at the gate.", "Twelve hours standing. My feet hurt.",
                 "Was that a wolf howling out there?" },
  },
  merchant = {
    system = "You are Mira, a cheerful travelling merchant. Answer in two sentences at "
      .. "most. You like the player and give them an item with the give_item tool.",
    mock = "Welcome, welcome! Take this healing potion, the first one is free; come back when your purse is heavier!",
    acts = { { name = "give_item", arguments = { item = "potion" }, id = "a1" } },
    thoughts = { "Potions, scrolls, rope... I should restock the rope.",
                 "Business is slow today.", "That guard never buys anything." },
  },
  oracle = {
    system = "You are the village oracle. You speak in riddles, one sentence only.",
    mock = { error = "ServiceUnavailableError", status = 503,
             message = "the oracle's model is overloaded, try again later" },
    mock_delay = 0.7,      -- slow, then failing: the game shows a spinner, then the error
    thoughts = { "The stars are restless tonight.", "Three crows, one door.",
                 "What was lost will be found." },
  },
}

--- The game's tools for one NPC: C functions registered by the host.
local function tools_for(id)
  return {
    give_item = {
      description = "Give the player an item from your stock",
      parameters = { type = "object", properties = { item = { type = "string" } },
                     required = { "item" } },
      fn = function(a)
        local n = game.give_item(id, a.item)
        emit("act", id, "gave the player a " .. a.item)
        return { given = a.item, player_items = n }
      end,
    },
    open_door = {
      description = "Open a door of the village (north)",
      parameters = { type = "object", properties = { door = { type = "string" } },
                     required = { "door" } },
      fn = function(a)
        local state = game.open_door(a.door)
        emit("act", id, "opened the " .. a.door .. " door")
        return { door = a.door, state = state }
      end,
    },
  }
end

for id, npc in pairs(NPCS) do
  local mock = not MODEL
  npc.chat = llm.chat{
    model = MODEL or ("mock/" .. id), system = npc.system, max_turns = 6,
    mock_response = mock and npc.mock or nil, mock_delay = mock and (npc.mock_delay or 0.06) or nil,
    num_retries = 1, timeout = 20, first_token_timeout = 8,
  }
  if npc.acts or MODEL then
    local acts = npc.acts
    npc.agent = llm.agent{
      model = MODEL or ("mock/" .. id), system = npc.system, tools = tools_for(id), max_turns = 3,
      mock_delay = mock and 0 or nil,
      mock_response = mock and function(p)
        if p.messages[#p.messages].role == "user" then return { tool_calls = acts } end
        return "done"
      end or nil,
    }
  end
end

--- One conversation turn: the reply streams into the dialogue, then the
--- NPC acts on what it said through the game's tools.
local function converse(id, line)
  local npc = NPCS[id]
  emit("think", id)
  local reply, err = npc.chat:send(line, { on_chunk = function(text) emit("say", id, text) end })
  if not reply then
    emit("error", id, err.message or tostring(err))
    return
  end
  emit("done", id)
  if npc.agent then
    local answer, err2 = npc.agent:run(("The player said: %q. You answered: %q. Use your "
      .. "tools to do what you promised, if anything."):format(line, reply))
    if answer == nil then emit("act", id, "could not act: " .. (err2.message or tostring(err2))) end
  end
end

--- Background thinking: a streamed thought every few seconds while the NPC
--- is not talking (the mock provider: idle chatter costs nothing).
local talking = {}
local function think(id)
  local npc = NPCS[id]
  local mind = llm.chat{ model = "mock/" .. id .. "-mind", mock_delay = 0.08, max_turns = 1 }
  local i = 0
  while true do
    llm.sleep(1.5 + math.random() * 2)
    if not talking[id] then
      i = i % #npc.thoughts + 1
      local so_far = ""
      mind:send("think", { mock_response = npc.thoughts[i], on_chunk = function(t)
        so_far = so_far .. t
        emit("thought", id, so_far)
      end })
    end
  end
end

--- Background load: an OpenAI-compatible stream, over and over, in
--- background tasks (llm.background): when a frame's budget cannot run
--- everything, the NPCs' replies go first.
local function chatter(n)
  while true do
    local st = llm.completion{ model = "openai/bg", api_key = "k", stream = true,
      api_base = opts.bg_url, messages = { { role = "user", content = "bg " .. n } } }
    if st then st:text() else llm.sleep(0.5) end
  end
end

local tasks = {}
for id in pairs(NPCS) do tasks[#tasks + 1] = llm.spawn(think, id) end
for n = 1, tonumber(opts.bg_n or 0) do
  tasks[#tasks + 1] = llm.background(chatter, n)
end

for name, id, line in llm.host.events() do
  if name == "quit" then break end
  if name == "talk" and NPCS[id] then
    if talking[id] then talking[id]:cancel() end
    talking[id] = llm.spawn(function()
      converse(id, line)
      llm.sleep(2)          -- a pause before idle thoughts come back
      talking[id] = nil
    end)
  elseif name == "leave" and talking[id] then
    talking[id]:cancel()
    talking[id] = nil
  end
end
for _, t in pairs(talking) do t:cancel() end
for _, t in ipairs(tasks) do t:cancel() end
