-- TLS against a real TLS server (openssl s_server, a separate process, with
-- a self-signed certificate made for the test): verification is always on,
-- an untrusted certificate fails the call, ca_file= trusts it.
local llm = require "luagent"
local proc = require "proc"
local servers = require "servers"

-- Starts openssl s_server on a random loopback port (retrying on a port
-- in use) and waits until it answers a trusted request.
local function start_tls(dir)
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  local _, code = proc.run(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
    .. "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s"):format(key, cert))
  assert(code == 0, "openssl req failed")
  for _ = 1, 20 do
    local port = math.random(20000, 60000)
    local pid = proc.start(("openssl s_server -quiet -www -accept 127.0.0.1:%d -cert %s -key %s > %s/log 2>&1")
      :format(port, cert, key, dir))
    local deadline = llm.now() + 5
    while llm.now() < deadline and proc.alive(pid) do
      local resp = llm.http.request{ url = ("https://127.0.0.1:%d/"):format(port), ca_file = cert,
                                     connect_timeout = 1 }
      if resp then resp:close() return port, pid, cert end
      llm.sleep(0.05)
    end
    proc.kill(pid)
  end
  error("could not start openssl s_server")
end

describe("TLS #integration", function()
  local dir, port, pid, cert

  setup(function()
    dir = proc.tmpname("tls")
    assert(os.execute("mkdir -p " .. dir))
    port, pid, cert = start_tls(dir)
  end)
  teardown(function()
    if pid then proc.kill(pid) end
    os.execute("rm -rf " .. dir)
  end)
  after_each(function() servers.assert_clean(assert) end)

  it("refuses a certificate it cannot verify", function()
    local resp, err = llm.http.request{ url = ("https://127.0.0.1:%d/"):format(port) }
    assert.is_nil(resp)
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("[Cc]ertificate", err.message)
  end)

  it("trusts the certificate given as ca_file", function()
    local resp, err = llm.http.request{ url = ("https://127.0.0.1:%d/"):format(port), ca_file = cert }
    assert.is_nil(err)
    assert.are.equal(200, resp.status)
    resp:close()
  end)

  it("offers no way to switch verification off from a script", function()
    local resp = llm.http.request{ url = ("https://127.0.0.1:%d/"):format(port),
                                   ssl_verify = false, verify = false, insecure = true }
    assert.is_nil(resp)
  end)
end)
