// Drives web/chat.html in Debian's headless Chromium (npm playwright-core)
// against scripts/websocket_chat.lua, which this script starts, stops and
// restarts as its own child process. Prints one JSON line per step; the
// busted spec (spec/integration/websocket_chat_spec.lua) asserts on them.
// Usage: node chat_browser.mjs LUAGENT_BIN SCREENSHOT_PATH
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [bin, screenshot] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

// Starts the chat server; resolves with {proc, url} once it printed its URL.
function startServer(port) {
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, ['scripts/websocket_chat.lua', '--port', String(port), '--mock-delay', '0.03'],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    proc.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/^listening on (http:\/\/\S+)\n/);
      if (m) resolve({ proc, url: m[1] });
    });
    proc.on('exit', (code) => reject(new Error('server exited ' + code)));
  });
}

function stopServer(proc) {
  return new Promise((resolve) => { proc.on('exit', (code, sig) => resolve({ code, sig })); proc.kill('SIGTERM'); });
}

// Sends text and waits for the reply to end; returns what the page showed:
// the lengths the reply bubble took while it streamed, its final text, the
// send button's state while streaming, and any error shown.
async function turn(page, text) {
  const errorsBefore = await page.locator('.msg.error').count();
  await page.fill('#input', text);
  await page.evaluate(() => {
    window.__lengths = [];
    window.__obs = new MutationObserver(() => {
      const b = document.querySelector('.msg.assistant:last-of-type');
      if (b && b.classList.contains('streaming')) window.__lengths.push(b.textContent.length);
    });
    window.__obs.observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
  });
  await page.click('#send');
  const disabledWhileStreaming = await page.$eval('#send', (b) => b.disabled);
  await page.waitForFunction(() => !document.querySelector('.msg.assistant.streaming'), null, { timeout: 20000 });
  const result = await page.evaluate(() => {
    window.__obs.disconnect();
    const all = document.querySelectorAll('.msg.assistant');
    const last = all[all.length - 1];
    return { lengths: window.__lengths, text: last ? last.textContent : null,
             done: last ? last.classList.contains('done') : false };
  });
  const errors = await page.locator('.msg.error').allTextContents();
  return { ...result, disabledWhileStreaming, error: errors.length > errorsBefore ? errors[errors.length - 1] : null,
           sendEnabledAfter: !(await page.$eval('#send', (b) => b.disabled)) };
}

const profile = mkdtempSync(path.join(tmpdir(), 'luagent-chromium-'));
let browser, server;
try {
  server = await startServer(0);
  out({ step: 'server', url: server.url });
  // a fresh profile directory (playwright passes it as --user-data-dir)
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    viewport: { width: 720, height: 640 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = browser.pages()[0] || await browser.newPage();
  await page.goto(server.url + '/');
  await page.waitForSelector('#status.connected', { timeout: 10000 });
  out({ step: 'connected' });

  out({ step: 'first', ...(await turn(page, 'Hello from Chromium')) });
  out({ step: 'second', ...(await turn(page, 'Do you remember me?')) });
  out({ step: 'fail', ...(await turn(page, '/fail please')) });
  out({ step: 'after_fail', ...(await turn(page, 'And now?')) });
  await page.screenshot({ path: screenshot });
  out({ step: 'screenshot', path: screenshot });

  // the server restarts on the same port: the page reconnects by itself
  const port = new URL(server.url).port;
  const stopped = await stopServer(server.proc);
  out({ step: 'stopped', ...stopped });
  await page.waitForSelector('#status.disconnected', { timeout: 10000 });
  server = await startServer(port);
  await page.waitForSelector('#status.connected', { timeout: 20000 });
  out({ step: 'reconnected', ...(await turn(page, 'Back again')) });
} catch (e) {
  out({ step: 'error', message: String(e && e.stack || e) });
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  if (server) { server.proc.removeAllListeners('exit'); server.proc.kill('SIGTERM'); }
  rmSync(profile, { recursive: true, force: true });
}
