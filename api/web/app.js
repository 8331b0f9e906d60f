// The AUTH dashboard: login, a customer's live view, the operator's country view.
// Plain JavaScript over /api/v1; charts by uPlot (vendored), the map from us-atlas shapes.
'use strict';

const UNITS = { electricity: 'kWh', gas: 'm³', water: 'm³' };
const BASE_UNITS = { electricity: 'Wh', gas: 'L', water: 'L' };
const DAY_MS = 86400000;
const $ = (id) => document.getElementById(id);
const live = [];   // open EventSources and timers, closed on view change

function number(value) {
  return Math.abs(value) >= 100
    ? value.toLocaleString(undefined, { maximumFractionDigits: 0 })
    : value.toLocaleString(undefined, { maximumSignificantDigits: 3 });
}

/// Wh and L in the units people read (kWh, m³).
function display(utility, value) {
  return number(value / 1000) + ' ' + UNITS[utility];
}

/// Small amounts (per resident) in Wh and L.
function displayBase(utility, value) {
  return number(value) + ' ' + BASE_UNITS[utility];
}

async function api(path, options = {}) {
  const response = await fetch('/api/v1' + path, { credentials: 'same-origin', ...options });
  if (response.status === 401) { showLogin(); throw new Error('log in first'); }
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(body && body.error ? body.error : 'HTTP ' + response.status);
  return body;
}

function stopLive() {
  while (live.length) {
    const item = live.pop();
    if (item.close) item.close(); else clearInterval(item);
  }
}

function show(view) {
  for (const id of ['login-view', 'customer-view', 'operator-view']) $(id).hidden = id !== view;
}

function showLogin() {
  stopLive();
  $('who').hidden = true;
  show('login-view');
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('login-error').textContent = '';
  const body = JSON.stringify({ username: $('username').value, password: $('password').value });
  const response = await fetch('/api/v1/login', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    $('login-error').textContent = answer.error || 'HTTP ' + response.status;
    return;
  }
  $('password').value = '';
  start();
});

$('logout').addEventListener('click', async () => {
  await fetch('/api/v1/logout', { method: 'POST' });
  history.replaceState(null, '', '/');
  showLogin();
});

async function start() {
  let me;
  try { me = await api('/me'); } catch { return; }
  $('who-name').textContent = me.username + ' (' + me.role + ')';
  $('who').hidden = false;
  stopLive();
  const asked = new URLSearchParams(location.search).get('customer');
  if (me.role === 'customer') {
    showCustomer(me.customerId, false);
  } else if (asked) {
    showCustomer(Number(asked), true);
  } else {
    showOperator();
  }
}

// ---- customer view -------------------------------------------------------

/// A uPlot chart of one series; `span` gives the x range (seconds) as [from, to] at each redraw.
/// A chart whose time axis reads in `timeZone` (an IANA name), or in the browser's zone.
function chart(target, title, utility, bars, span, timeZone) {
  const width = Math.max(260, target.clientWidth || 360);
  const options = {
    title, width, height: 180,
    ...(timeZone ? { tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), timeZone) } : {}),
    scales: { x: { time: true, ...(span ? { range: () => span() } : {}) } },
    axes: [{}, { values: (_, ticks) => ticks.map((t) => (t / 1000).toLocaleString()) , size: 60 }],
    series: [{}, {
      label: UNITS[utility], stroke: '#3d7dd8', fill: 'rgba(61,125,216,.25)',
      value: (_, v) => (v == null ? '–' : (v / 1000).toLocaleString(undefined, { maximumFractionDigits: 3 })),
      ...(bars ? { paths: uPlot.paths.bars({ size: [0.8, 14] }), points: { show: false } } : {}),
    }],
  };
  return new uPlot(options, [[], []], target);
}

function points(series) {
  return [series.map((p) => p.startMs / 1000), series.map((p) => p.sum)];
}

async function showCustomer(customerId, picked) {
  stopLive();
  show('customer-view');
  $('customer-id').textContent = customerId;
  $('customer-pick').hidden = !picked;
  $('customer-input').value = customerId;
  $('customer-error').textContent = '';
  const cards = $('utility-cards');
  cards.textContent = '';
  let today;
  try {
    today = await api('/customers/' + customerId + '/today');
  } catch (error) {
    // A customer without readings yet: look again shortly.
    $('customer-error').textContent = error.message;
    const retry = setTimeout(() => showCustomer(customerId, picked), 2000);
    live.push({ close: () => clearTimeout(retry) });
    return;
  }
  const views = {};
  for (const comparison of today.utilities) {
    const utility = comparison.utility;
    const card = document.createElement('div');
    card.className = 'card';
    card.dataset.utility = utility;
    card.innerHTML = `<h3>${utility}</h3>
      <div>Today <span class="big" data-testid="today-${utility}"></span></div>
      <div class="muted" data-role="yesterday"></div>
      <div data-role="live" data-testid="live-chart-${utility}"></div>
      <div data-role="days" data-testid="days-chart-${utility}"></div>
      <div class="muted" data-role="quality" data-testid="quality-${utility}"></div>`;
    cards.appendChild(card);
    views[utility] = { card, comparison };
  }
  // Charts once every card is laid out, so each takes its card's width.
  const lastHour = () => { const now = Date.now() / 1000; return [now - 3600, now + 60]; };
  const lastMonth = () => { const end = (Math.floor(Date.now() / DAY_MS) + 1) * DAY_MS / 1000; return [end - 31 * 86400, end]; };
  for (const view of Object.values(views)) {
    const utility = view.comparison.utility;
    view.liveChart = chart(view.card.querySelector('[data-role=live]'), 'Last hour, per minute (live)', utility, false, lastHour);
    view.daysChart = chart(view.card.querySelector('[data-role=days]'), 'Last 30 days (' + today.timeZone + ')', utility, true, lastMonth, today.timeZone);
    setToday(view, view.comparison.today);
  }
  showMeters(customerId);
  const past = await api('/customers/' + customerId + '/usage?granularity=day');
  for (const series of past.utilities) {
    const view = views[series.utility];
    if (!view) continue;
    view.daysChart.setData(points(series.points));
    view.card.querySelector('[data-role=quality]').textContent = dayQuality(series.points, past.timeZone);
  }
  const events = new EventSource('/api/v1/customers/' + customerId + '/live');
  live.push(events);
  events.addEventListener('usage', (event) => {
    const update = JSON.parse(event.data);
    for (const usage of update.utilities) {
      const view = views[usage.utility];
      if (!view) continue;
      view.liveChart.setData(points(usage.minutes));
      view.card.dataset.updates = String(Number(view.card.dataset.updates || 0) + 1);
      if (usage.today) setToday(view, usage.today.sum);
    }
  });
}

/// `ms` as a YYYY-MM-DD date in `timeZone`.
function localDate(ms, timeZone) {
  return new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date(ms));
}

/// The final days whose readings were incomplete, estimated, flagged suspect
/// or edited by an operator, dated in the customer's zone (its days are local).
function dayQuality(points, timeZone) {
  const marked = points.filter((p) => p.source === 'batch' && (p.suspect > 0 || p.edited > 0 || p.estimated > 0 || (p.completeness != null && p.completeness < 1)));
  return marked.map((p) => {
    const notes = [];
    if (p.completeness != null && p.completeness < 1) notes.push((100 * p.completeness).toFixed(0) + ' % complete');
    if (p.suspect > 0) notes.push(p.suspect + ' readings flagged suspect');
    if (p.estimated > 0) notes.push(p.estimated + ' intervals estimated');
    if (p.edited > 0) notes.push(p.edited + ' intervals edited');
    return localDate(p.startMs, timeZone) + ': ' + notes.join(', ');
  }).join('; ');
}

/// An installation's period as dates (UTC), open-ended when still installed.
function period(installation) {
  const day = (ms) => new Date(ms).toISOString().slice(0, 10);
  return day(installation.validFromMs) + ' – ' + (installation.validToMs == null ? 'now' : day(installation.validToMs));
}

function countsIn(installation) {
  return (installation.multiplier === 1 ? '' : installation.multiplier + ' × ') + installation.unit + ' every ' + installation.intervalSecs / 60 + ' min';
}

/// The meters the registry has for a customer, each installation a row.
async function showMeters(customerId) {
  const body = $('customer-meters').tBodies[0];
  body.textContent = '';
  try {
    const meters = await api('/customers/' + customerId + '/meters');
    body.innerHTML = meters.installations.map((i) => `<tr><td>${i.meterId}</td><td>${i.utility}</td><td>${escape(i.premiseId)}</td><td>${i.region}</td><td>${countsIn(i)}</td><td>${period(i)}</td></tr>`).join('');
    $('customer-meters-note').textContent = meters.installations.length ? '' : 'The registry has no meter of this customer.';
  } catch (error) {
    $('customer-meters-note').textContent = error.message;
  }
}

function escape(text) {
  const span = document.createElement('span');
  span.textContent = text;
  return span.innerHTML;
}

function setToday(view, todaySum) {
  const { comparison, card } = view;
  const utility = comparison.utility;
  card.querySelector('.big').textContent = display(utility, todaySum);
  const line = card.querySelector('[data-role=yesterday]');
  if (comparison.yesterday == null) { line.textContent = 'No usage yesterday on record.'; return; }
  const base = comparison.yesterdaySoFar != null ? comparison.yesterdaySoFar : null;
  let text = 'Yesterday ' + display(utility, comparison.yesterday) + (comparison.yesterdaySource === 'batch' ? ' (final)' : ' (live)');
  if (base != null && base > 0) {
    const change = (todaySum - base) / base * 100;
    text += `; by this time yesterday ${display(utility, base)}, today ${change >= 0 ? '+' : ''}${change.toFixed(0)}%`;
  }
  line.textContent = text;
}

$('customer-pick').addEventListener('submit', (event) => {
  event.preventDefault();
  const id = $('customer-input').value;
  history.replaceState(null, '', '?customer=' + encodeURIComponent(id));
  showCustomer(Number(id), true);
});

// ---- operator view -------------------------------------------------------

let shapes = null;
let regions = [];
let selected = null;
let regionChart = null;

const PALETTE = ['#f1eef6', '#d0d1e6', '#a6bddb', '#74a9cf', '#2b8cbe', '#045a8d'];

function perCapita(region, utility) {
  const total = region.utilities.find((u) => u.utility === utility);
  return total ? total.perCapita : 0;
}

function drawMap() {
  const utility = $('map-utility').value;
  const values = regions.map((r) => perCapita(r, utility));
  const max = Math.max(...values, 0);
  const colour = (value) => (max > 0 && value > 0 ? PALETTE[Math.min(PALETTE.length - 1, 1 + Math.floor((value / max) * (PALETTE.length - 1.001)))] : PALETTE[0]);
  for (const region of regions) {
    const path = document.querySelector(`#map path[data-region="${region.code}"]`);
    if (path) {
      const value = perCapita(region, utility);
      path.setAttribute('fill', colour(value));
      path.dataset.value = String(value);
    }
  }
  $('map-legend').innerHTML = 'per resident today: 0 ' + PALETTE.map((c) => `<span class="swatch" style="background:${c}"></span>`).join('') +
    ' ' + displayBase(utility, max);
  const rows = [...regions].sort((a, b) => perCapita(b, utility) - perCapita(a, utility)).slice(0, 10);
  $('top-regions').tBodies[0].innerHTML = rows.map((r) => {
    const total = r.utilities.find((u) => u.utility === utility);
    return `<tr class="clickable" data-region="${r.code}"><td>${r.name}</td><td>${displayBase(utility, perCapita(r, utility))}</td><td>${total ? display(utility, total.sum) : '–'}</td></tr>`;
  }).join('');
}

async function showOperator() {
  stopLive();
  show('operator-view');
  if (!shapes) shapes = await (await fetch('/vendor/us-states.json')).json();
  const map = $('map');
  map.setAttribute('viewBox', shapes.viewBox);
  map.innerHTML = Object.entries(shapes.states).map(([code, d]) => `<path data-region="${code}" d="${d}"></path>`).join('');
  regions = await api('/regions');
  drawMap();
  const events = new EventSource('/api/v1/live/regions');
  live.push(events);
  events.addEventListener('regions', (event) => {
    regions = JSON.parse(event.data);
    drawMap();
    map.dataset.updates = String(Number(map.dataset.updates || 0) + 1);
  });
  refreshPipeline();
  live.push(setInterval(refreshPipeline, 2000));
  refreshRegistry();
  refreshGaps();
  refreshSilent();
  live.push(setInterval(refreshSilent, 10000));
  refreshSuspect();
}

/// The installed meters the stream has not heard from for four of their reading intervals.
async function refreshSilent() {
  const table = $('silent-meters');
  try {
    const silent = await api('/quality/silent');
    const time = (ms) => new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
    const interval = (secs) => secs % 3600 === 0 ? `${secs / 3600} h` : secs % 60 === 0 ? `${secs / 60} min` : `${secs} s`;
    table.tBodies[0].innerHTML = silent.meters.map((m) => `<tr class="clickable" data-customer="${m.customerId}"><td>${m.meterId}</td><td>${m.customerId}</td><td>${m.utility}</td><td>${m.region}</td><td>${interval(m.intervalSecs)}</td><td>${time(m.lastReadingMs)}</td><td>${m.silentIntervals.toLocaleString()}</td></tr>`).join('');
    table.hidden = silent.meters.length === 0;
    $('silent-note').textContent = silent.meters.length
      ? `Installed meters whose newest reading in the stream is ${silent.intervals} or more of their reading intervals old; the longest silent first.${silent.complete ? '' : ' More may be silent.'}`
      : `Every meter the stream has heard from read within its last ${silent.intervals} intervals.`;
  } catch (error) {
    table.hidden = true;
    $('silent-note').textContent = error.message;
  }
}

/// The meters that missed intervals of the newest day the batch computed.
async function refreshGaps() {
  const table = $('meter-gaps');
  try {
    const gaps = await api('/quality/gaps');
    $('gaps-date').textContent = gaps.date ? '(' + gaps.date + ', each region\'s local day)' : '';
    const time = (ms) => ms == null ? 'nothing that day' : new Date(ms).toISOString().slice(11, 16);
    table.tBodies[0].innerHTML = gaps.meters.map((g) => `<tr class="clickable" data-customer="${g.customerId}"><td>${g.meterId}</td><td>${g.customerId}</td><td>${g.utility}</td><td>${g.region}</td><td>${g.expectedIntervals}</td><td>${g.receivedIntervals}</td><td>${g.missingIntervals}</td><td>${g.estimatedIntervals}</td><td>${(100 * g.completeness).toFixed(1)} %</td><td>${time(g.lastReadingMs)}</td></tr>`).join('');
    table.hidden = gaps.meters.length === 0;
    $('gaps-note').textContent = !gaps.date ? 'The daily batch has computed no day yet.'
      : gaps.meters.length ? 'Every interval the registry expected, against the readings the batch found; most missing first. Estimates (batch.estimation) fill what they can and count in the totals.'
      : 'Every registered meter read every interval the registry expected.';
  } catch (error) {
    table.hidden = true;
    $('gaps-note').textContent = error.message;
  }
}

/// The meters whose readings of the newest computed day the validation rules flagged.
async function refreshSuspect() {
  const table = $('suspect-meters');
  try {
    const suspect = await api('/quality/suspect');
    $('suspect-date').textContent = suspect.date ? '(' + suspect.date + ', each region\'s local day)' : '';
    const time = (ms) => new Date(ms).toISOString().slice(11, 16);
    table.tBodies[0].innerHTML = suspect.meters.map((m) => `<tr class="clickable" data-customer="${m.customerId}"><td>${m.meterId}</td><td>${m.customerId}</td><td>${m.utility}</td><td>${m.region}</td><td>${m.outOfRange}</td><td>${m.spikes}</td><td>${m.frozen}</td><td>${m.registerEvents}</td><td>${number(m.maxValue)}</td><td>${time(m.firstMs)} – ${time(m.lastMs)}</td></tr>`).join('');
    table.hidden = suspect.meters.length === 0;
    $('suspect-note').textContent = !suspect.date ? 'The daily batch has computed no day yet.'
      : suspect.meters.length ? 'Readings the validation rules (batch.validation) flagged; they still count in every total.'
      : 'No reading was flagged suspect.';
  } catch (error) {
    table.hidden = true;
    $('suspect-note').textContent = error.message;
  }
}

async function refreshRegistry() {
  try {
    const summary = await api('/registry');
    $('registry-summary').textContent = `${summary.meters.toLocaleString()} meters, ${summary.installations.toLocaleString()} installations (revision ${summary.revision}). Import with auth registry import FILE.`;
  } catch (error) {
    $('registry-summary').textContent = error.message;
  }
}

$('meter-lookup').addEventListener('submit', async (event) => {
  event.preventDefault();
  const table = $('meter-installations');
  $('meter-error').textContent = '';
  try {
    const meter = await api('/registry/meters/' + encodeURIComponent($('meter-input').value));
    table.tBodies[0].innerHTML = meter.installations.map((i) => `<tr class="clickable" data-customer="${i.customerId}"><td>${i.customerId}</td><td>${i.utility}</td><td>${escape(i.premiseId)}</td><td>${i.region}</td><td>${countsIn(i)}</td><td>${period(i)}</td></tr>`).join('');
    table.hidden = false;
  } catch (error) {
    table.hidden = true;
    $('meter-error').textContent = error.message;
  }
});

for (const id of ['meter-installations', 'meter-gaps', 'silent-meters', 'suspect-meters']) {
  $(id).addEventListener('click', (event) => {
    const row = event.target.closest('tr[data-customer]');
    if (!row) return;
    history.replaceState(null, '', '?customer=' + row.dataset.customer);
    showCustomer(Number(row.dataset.customer), true);
  });
}

$('map-utility').addEventListener('change', () => { drawMap(); if (selected) openRegion(selected); });

$('map').addEventListener('mousemove', (event) => {
  const code = event.target.dataset && event.target.dataset.region;
  const tooltip = $('tooltip');
  if (!code) { tooltip.hidden = true; return; }
  const region = regions.find((r) => r.code === code);
  const utility = $('map-utility').value;
  const total = region && region.utilities.find((u) => u.utility === utility);
  tooltip.innerHTML = `<b>${region ? region.name : code}</b><br>${total ? display(utility, total.sum) + ' today' : 'no readings today'}<br>` +
    `${region ? displayBase(utility, perCapita(region, utility)) + ' per resident, ' + region.population.toLocaleString() + ' residents' : ''}`;
  const box = $('map').parentElement.getBoundingClientRect();
  tooltip.style.left = (event.clientX - box.left + 12) + 'px';
  tooltip.style.top = (event.clientY - box.top + 12) + 'px';
  tooltip.hidden = false;
});
$('map').addEventListener('mouseleave', () => { $('tooltip').hidden = true; });
$('map').addEventListener('click', (event) => {
  const code = event.target.dataset && event.target.dataset.region;
  if (code) openRegion(code);
});
$('top-regions').addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-region]');
  if (row) openRegion(row.dataset.region);
});

async function openRegion(code) {
  selected = code;
  document.querySelectorAll('#map path.selected').forEach((p) => p.classList.remove('selected'));
  const path = document.querySelector(`#map path[data-region="${code}"]`);
  if (path) path.classList.add('selected');
  const utility = $('map-utility').value;
  const usage = await api(`/regions/${code}/usage?utility=${utility}&granularity=hour`);
  $('region-panel').hidden = false;
  $('region-title').textContent = `${usage.name}: ${utility}, last 48 hours per hour`;
  const target = $('region-chart');
  if (regionChart) regionChart.destroy();
  target.textContent = '';
  const span = [usage.fromMs / 1000, usage.toMs / 1000];
  regionChart = chart(target, usage.name, utility, true, () => span);
  regionChart.setData(points(usage.utilities[0].points));
  target.dataset.region = code;
  target.dataset.points = String(usage.utilities[0].points.length);
  const body = $('region-top').tBodies[0];
  try {
    const top = await api(`/regions/${code}/top?utility=${utility}`);
    $('region-top-date').textContent = top.date + ' (daily batch)';
    body.innerHTML = top.customers.map((c) => `<tr class="clickable" data-customer="${c.customerId}"><td>${c.position}</td><td>${c.customerId}</td><td>${display(utility, c.total)}</td></tr>`).join('');
  } catch (error) {
    $('region-top-date').textContent = error.message;
    body.textContent = '';
  }
}

$('region-top').addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-customer]');
  if (!row) return;
  history.replaceState(null, '', '?customer=' + row.dataset.customer);
  showCustomer(Number(row.dataset.customer), true);
});

$('operator-customer').addEventListener('submit', (event) => {
  event.preventDefault();
  const id = $('operator-customer-input').value;
  history.replaceState(null, '', '?customer=' + encodeURIComponent(id));
  showCustomer(Number(id), true);
});

async function refreshPipeline() {
  let overview;
  try { overview = await api('/pipeline'); } catch { return; }
  const late = overview.stream.countedLate + overview.stream.tooLate;
  const drift = overview.reconciliation.length ? overview.reconciliation[0] : null;
  const card = (title, value, note) => `<div class="card"><h3>${title}</h3><div class="big">${value}</div><div class="muted">${note}</div></div>`;
  $('pipeline').innerHTML =
    card('Ingest', overview.ingestPerSecond == null ? '…' : Math.round(overview.ingestPerSecond).toLocaleString() + '/s', overview.logReadings.toLocaleString() + ' readings in the log') +
    card('Stream lag', overview.lag.toLocaleString(), 'readings not yet checkpointed') +
    card('Late readings', late.toLocaleString(), overview.stream.tooLate.toLocaleString() + ' too late for the stream, left to the batch') +
    card('Rejected', overview.stream.malformed.toLocaleString(), overview.stream.duplicates.toLocaleString() + ' duplicates dropped') +
    card('Batch', drift ? drift.date : 'not yet', !drift ? 'no day computed yet'
      : drift.drift != null ? `${drift.utility}: drift ${number(drift.drift)} ${BASE_UNITS[drift.utility]} (batch − stream)`
        + (drift.batchEstimated ? `; the batch's total holds ${number(drift.batchEstimated)} of estimates` : '')
      : `${drift.utility}: ${number(drift.batchTotal / 1000)} ${UNITS[drift.utility]}; the stream did not see this day`);
}

start();
