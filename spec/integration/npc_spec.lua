-- examples/npc, the SDL2 game, run headless under Xvfb with a scripted
-- player while 100 background streams run against the loopback server.
-- The game reports its frame and la_step times and what its dialogue box
-- drew. Times are checked with margins a loaded 2-core machine keeps
-- (medians, and the budget against itself); `make bench` reports the
-- absolute figures.
local proc = require "proc"
local servers = require "servers"

local build, run = proc.build, proc.run

local fields = proc.fields

describe("examples/npc under Xvfb #integration", function()
  it("streams the NPCs' replies into the dialogue at 60 fps while 100 streams run", function()
    local mock = servers.mock()
    local shot = proc.tmpname("npc.png")
    -- detect_leaks=0 (for `make asan`): SDL's system libraries (dbus, X11)
    -- leave allocations at exit and are unloaded before LeakSanitizer runs,
    -- so they cannot be suppressed by name; the runtime's own leaks are
    -- checked by every other spec.
    local out, code = run(("ASAN_OPTIONS=detect_leaks=0 SDL_AUDIODRIVER=dummy xvfb-run -a -s '-screen 0 800x600x24' "
      .. "%s/npc --autoplay --seconds 14 --report --screenshot %s --bg-streams 100 "
      .. "--bg-url %s/s/chunks=40,delay=20/v1"):format(build, shot, mock.url))
    mock.stop()
    assert.are.equal(0, code, out)
    local r = fields(out:match("npc: [^\n]*") or "")
    -- the replies, streamed token by token, as the dialogue box drew them
    assert.matches("drawn guard reply: Hmph. A traveller at this hour? Mind your manners "
      .. "and I will open the north door for you.\n", out, 1, true)
    assert.is_true(r.reply_tokens >= 18, out)
    -- the slow, failing model: a spinner first, then its error, and the game went on
    assert.matches("drawn oracle error: the oracle's model is overloaded, try again later\n",
      out, 1, true)
    assert.is_true(r.spinner_frames > 10, out)
    assert.matches("drawn merchant reply: Welcome, welcome!", out, 1, true)
    -- the NPCs acted through the game's C functions (la_register), as agent tools
    assert.matches("door: open\n", out, 1, true)
    assert.matches("items: potion\n", out, 1, true)
    -- background: the other NPCs' thoughts and the 100 streams kept flowing
    assert.is_true(r.thought_tokens > 0, out)
    assert.is_true(r.received_kb > 1000, out)
    assert.are.equal(0, r.tasks_failed, out)
    -- frames: 60 fps held at the median; la_step within its budget
    assert.is_true(r.frame_p50_ms <= 17.7, out)
    assert.is_true(r.fps >= 45, out)
    assert.is_true(r.step_p50_ms <= r.budget_ms + 0.5, out)
    assert.is_true(r.over_slice <= math.max(3, r.frames * 0.03), out)
    -- the screenshot was taken mid-stream and is a PNG
    assert.are.equal("yes", r.screenshot, out)
    assert.are.equal("\137PNG", (proc.read(shot) or ""):sub(1, 4))
    os.remove(shot)
  end)
end)
