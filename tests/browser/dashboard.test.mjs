// The dashboard as people use it, in headless Chromium (Debian's /usr/bin/chromium)
// driven by playwright-core, against a real `auth up` (AUTH_BIN, built by cargo).
// A customer logs in and sees today's numbers and a chart that updates live; an
// operator logs in, sees every state coloured on the map, hovers one for its
// numbers and clicks it for its chart. Screenshots go to artifacts/ (or AUTH_ARTIFACTS).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const binary = process.env.AUTH_BIN;
const artifacts = process.env.AUTH_ARTIFACTS || new URL('./artifacts/', import.meta.url).pathname;
let up;
let browser;
let base;
const logins = new Map();

/** Starts `auth up` and reads its banner: the dashboard address and the demo accounts. */
async function startAuth() {
  assert.ok(binary, 'AUTH_BIN names the auth binary (scripts/test.sh sets it)');
  const data = mkdtempSync(join(tmpdir(), 'auth-browser-'));
  const config = join(data, 'pipeline.yaml');
  writeFileSync(config, [
    'simulator:', '  customers: 3000',
    'stream:', '  flushIntervalMs: 500', '  checkpointIntervalMs: 1000',
    'archive:', `  url: ${data}/master`, '  rollSecs: 1',
    'batch:', `  databaseUrl: sqlite://${data}/results.db`, '  scheduleSecs: 2', '',
  ].join('\n'));
  up = spawn(binary, ['up', '--listen', '127.0.0.1:0', '--ingest-listen', '127.0.0.1:0', '--config', config],
    { env: { ...process.env, AUTH_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
  up.on('exit', () => rmSync(data, { recursive: true, force: true }));
  const lines = createInterface({ input: up.stdout });
  const deadline = setTimeout(() => { throw new Error('auth up printed no banner within 60 s'); }, 60_000);
  for await (const line of lines) {
    const dashboard = line.match(/dashboard\s+(http:\/\/\S+?)\/?$/);
    if (dashboard) base = dashboard[1];
    const login = line.match(/login\s+(\S+) \/ (\S+)/);
    if (login) logins.set(login[1], login[2]);
    if (line.includes('Press Ctrl-C')) break;
  }
  clearTimeout(deadline);
  assert.ok(base, 'the banner names the dashboard');
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  await startAuth();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  if (up && up.exitCode === null) {
    const exited = new Promise((resolve) => up.on('exit', resolve));
    up.kill('SIGTERM');
    await exited;
  }
});

async function logIn(page, username) {
  await page.goto(base + '/');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(logins.get(username));
  await page.getByRole('button', { name: 'Log in' }).click();
}

test('a customer logs in and sees numbers and a chart that updates live', async () => {
  const customer = [...logins.keys()].find((name) => name.startsWith('customer-'));
  assert.ok(customer, 'auth up printed a demo customer');
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  await logIn(page, customer);
  await page.locator('#customer-view').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#customer-id').textContent(), customer.replace('customer-', ''));
  const card = page.locator('#utility-cards .card').first();
  await card.waitFor();
  const utility = await card.getAttribute('data-utility');
  const today = page.getByTestId(`today-${utility}`);
  await assert.doesNotReject(today.waitFor());
  assert.match(await today.textContent(), /^[\d.,]+ (kWh|m³)$/);
  // The live chart: a uPlot canvas, redrawn by at least two live updates.
  await page.getByTestId(`live-chart-${utility}`).locator('canvas').waitFor();
  await page.waitForFunction((u) => Number(document.querySelector(`.card[data-utility="${u}"]`).dataset.updates || 0) >= 2,
    utility, { timeout: 30_000 });
  await page.getByTestId(`days-chart-${utility}`).locator('canvas').waitFor();
  // The customer's meters, as the registry has them (the simulator registered its fleet).
  const meters = page.getByTestId('customer-meters').locator('tbody tr');
  await meters.first().waitFor();
  assert.match(await meters.first().textContent(), /SIM-\d+.*US-[A-Z]{2}.*every 15 min.*2000-01-01 – now/);
  // The cookie is HttpOnly: the page's script cannot read it.
  assert.equal(await page.evaluate(() => document.cookie), '');
  await page.screenshot({ path: join(artifacts, 'customer.png'), fullPage: true });
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.locator('#login-view').waitFor({ state: 'visible' });
  await page.close();
});

test('a wrong password is refused on the login page', async () => {
  const page = await browser.newPage();
  await page.goto(base + '/');
  await page.getByLabel('Username').fill('operator');
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByText('wrong username or password').waitFor();
  await page.close();
});

test('an operator sees every state coloured, hovers one and clicks it for its chart', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  await logIn(page, 'operator');
  await page.locator('#operator-view').waitFor({ state: 'visible' });
  const states = page.locator('#map path');
  await page.waitForFunction(() => document.querySelectorAll('#map path[fill]').length === 51);
  assert.equal(await states.count(), 51);
  // Colours by usage per resident: once readings flow, the states differ.
  await page.waitForFunction(() => new Set([...document.querySelectorAll('#map path')].map((p) => p.getAttribute('fill'))).size >= 3,
    null, { timeout: 30_000 });
  const california = page.locator('#map path[data-region="US-CA"]');
  await california.hover();
  const tooltip = page.locator('#tooltip');
  await tooltip.waitFor({ state: 'visible' });
  assert.match(await tooltip.textContent(), /California.*kWh.*per resident/s);
  await page.screenshot({ path: join(artifacts, 'operator-map.png'), fullPage: true });
  await california.click();
  const chart = page.getByTestId('region-chart');
  await chart.locator('canvas').waitFor();
  assert.equal(await chart.getAttribute('data-region'), 'US-CA');
  assert.ok(Number(await chart.getAttribute('data-points')) > 0, 'the region chart has points');
  await page.locator('#region-title').getByText('California').waitFor();
  // Pipeline health is shown, and which meters the stream has not heard from.
  await page.getByTestId('pipeline').getByText('Ingest').waitFor();
  await page.waitForFunction(() => /read within its last 4 intervals|4 or more of their reading intervals old/
    .test(document.querySelector('[data-testid=silent-note]').textContent));
  // The meter registry: how many meters, and one looked up with the customer it belongs to.
  await page.waitForFunction(() => /^[\d,]+ meters, [\d,]+ installations/.test(document.querySelector('[data-testid=registry-summary]').textContent));
  await page.getByLabel('Meter id').fill('4');
  await page.getByRole('button', { name: 'Look up' }).click();
  const installation = page.getByTestId('meter-installations').locator('tbody tr').first();
  await installation.waitFor();
  assert.match(await installation.textContent(), /^1electricitySIM-1/);
  await page.screenshot({ path: join(artifacts, 'operator-region.png'), fullPage: true });
  await page.close();
});
