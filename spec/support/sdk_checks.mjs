// spec/support/sdk_checks.mjs -- what the SDK scripts of the gateway specs
// share: a named check runs an async function and records what it
// returned, or the error the SDK raised (its class, status and message).
export function checks() {
  const out = {};
  async function check(name, fn) {
    try {
      out[name] = { ok: true, ...(await fn()) };
    } catch (e) {
      out[name] = { ok: false, error: e.constructor.name, status: e.status, message: String(e.message) };
    }
  }
  return { out, check };
}
