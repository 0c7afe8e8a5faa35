// Wires the page together: the live view on the left, the meeting client (a Phone) on the right.

import { LiveView, meterFill } from './live.js';
import { Phone } from './call.js';
import { Archive } from './archive.js';
import { Customers } from './customers.js';
import { ClusterView } from './cluster.js';

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// ---- operator sign-in: the page's data is the operators' ---------------------------------------
// A `#token=…` in the address (the bridge prints such a link at start) signs in at once and is
// taken out of the address; otherwise the page asks for the token.
async function signIn(token) {
  const r = await fetch('/api/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token }),
  });
  if (r.ok) return null;
  const body = await r.json().catch(() => ({}));
  return body.message || `sign-in refused (${r.status})`;
}

async function signedIn() {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromUrl) {
    history.replaceState(null, '', location.pathname + location.search);
    if (!(await signIn(fromUrl))) return true;
  }
  try {
    return (await (await fetch('/api/session')).json()).operator === true;
  } catch {
    return false;
  }
}

function showSignIn() {
  $('#signin').hidden = false;
  $('#app').hidden = true;
  $('#signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const error = await signIn($('#signin-token').value);
    if (error) {
      $('#signin-status').textContent = error;
      $('#signin-status').className = 'status error';
    } else {
      location.reload();
    }
  });
}

const operator = await signedIn();
if (!operator) showSignIn();
else $('#app').hidden = false;

// ---- live view and the bridge's status --------------------------------------------------------
const live = new LiveView($('#live'));
if (operator) live.start();
const archive = new Archive($('#archive'));
if (operator) archive.load();
const customers = new Customers($('#customers'));
if (operator) customers.load();

const cluster = new ClusterView($('#cluster'), () => health());

async function health() {
  const pill = $('#bridge-status');
  try {
    const h = await (await fetch('/healthz')).json();
    if (operator) cluster.show(h.cluster);
    pill.textContent = h.status === 'ok' ? 'bridge ok' : `bridge ${h.status}`;
    pill.className = `pill ${h.status === 'ok' ? 'ok' : 'warn'}`;
    const mins = Math.floor(h.uptime_s / 60);
    $('#bridge-meta').textContent = `v${h.version} · up ${mins < 1 ? `${h.uptime_s} s` : `${mins} min`}`;
  } catch {
    pill.textContent = 'bridge offline';
    pill.className = 'pill bad';
    $('#bridge-meta').textContent = '';
  }
}
health();
setInterval(health, 5000);
$('#live').addEventListener('bridge', health);

// ---- the meeting client -------------------------------------------------------------------------
const saved = (key, make) => {
  let v = localStorage.getItem(key);
  if (!v) {
    v = make();
    localStorage.setItem(key, v);
  }
  return v;
};
const account = saved('pttbridge.account', () => `web-${Math.random().toString(36).slice(2, 10)}`);
$('#call-name').value = saved('pttbridge.name', () => 'Web listener');
$('#call-name').addEventListener('change', (e) => localStorage.setItem('pttbridge.name', e.target.value.trim()));

const phone = new Phone(() => ({
  account,
  name: $('#call-name').value.trim() || 'Web listener',
}));

// Channels to dial come from the live snapshot; "Another number…" takes any id.
let dialIn = []; // the snapshot's dial-ins: name, and whether each channel's PTT account is connected
let phoneStatus = { state: 'idle', text: 'Not in a call.', tone: 'info' };
let wasUnreachable = false;
let recheck = null;
$('#live').addEventListener('state', (e) => {
  dialIn = e.detail.dial_in;
  renderCall();
  const select = $('#call-target');
  const current = select.value;
  const options = e.detail.dial_in
    .filter((d) => d.policy !== 'reject')
    .map((d) => `<option value="${d.user_id}">${esc(d.name || d.channel)} (${d.user_id})</option>`);
  options.push('<option value="other">Another number…</option>');
  const html = options.join('');
  if (select.dataset.html !== html) {
    select.innerHTML = html;
    select.dataset.html = html;
    if ([...select.options].some((o) => o.value === current)) select.value = current;
    showNumber();
  }
});
const showNumber = () => {
  $('#call-number-row').hidden = $('#call-target').value !== 'other';
};
$('#call-target').addEventListener('change', showNumber);

$('#call-form').addEventListener('submit', (e) => {
  e.preventDefault();
  startAudio();
  const select = $('#call-target');
  const other = select.value === 'other';
  const raw = other ? $('#call-number').value.trim() : select.value;
  const id = Number(raw);
  if (!raw || !Number.isInteger(id)) {
    phoneStatus = { state: phone.state, text: 'Enter the number to call.', tone: 'error' };
    renderCall();
    return;
  }
  const label = other ? `number ${id}` : select.selectedOptions[0].textContent;
  phone.dial({ id, label });
});
$('#hangup').addEventListener('click', () => phone.hangUp());

function setStatus(text, tone = 'info') {
  const el = $('#call-status');
  el.textContent = text;
  el.className = `status ${tone}`;
}

/**
 * Why the channel in the call cannot be reached now (its PTT account is not connected to its
 * server), or null. The bridge keeps the call up and the channel comes back by itself; the
 * live snapshot says when (it is fetched again on every side.connected / side.disconnected).
 */
function unreachable(target) {
  const d = target && dialIn.find((x) => x.user_id === target.id);
  if (!d || !d.state || d.state === 'connected') return null;
  const name = d.name || d.channel || target.label;
  return `${name} is unreachable: its PTT server is down${d.reason ? ` (${d.reason})` : ''}. ` +
    'The call stays up and comes back when the server does.';
}

// The call panel: the phone's state, and in a call whether the channel can be reached.
function renderCall() {
  const { state } = phoneStatus;
  const down = state === 'connected' ? unreachable(phone.target) : null;
  if (!down && wasUnreachable && state === 'connected') {
    phoneStatus = { state, text: `In a call with ${phone.target.label}.`, tone: 'ok' };
  }
  wasUnreachable = !!down;
  // The snapshot is fetched again on side.connected; while the channel is away, it is also
  // looked at every few seconds, so a missed or early event cannot leave the panel saying so.
  clearTimeout(recheck);
  if (down) recheck = setTimeout(() => live.refresh(), 3000);
  if (down) setStatus(down, 'warn');
  else setStatus(phoneStatus.text, phoneStatus.tone);
  document.body.dataset.call = state;
  document.body.dataset.reach = down ? 'unreachable' : 'ok';
  $('#call').classList.toggle('unreachable', !!down);
  $('#call-form').hidden = state !== 'idle';
  $('#call-live').hidden = state !== 'connected';
  $('#hangup').hidden = state === 'idle';
  $('#hangup').textContent = state === 'connected' ? 'Hang up' : 'Cancel';
}

phone.addEventListener('status', (e) => {
  phoneStatus = e.detail;
  renderCall();
});

phone.addEventListener('talkers', (e) => {
  const names = e.detail;
  $('#call-talkers').innerHTML = names.length
    ? names.map((n) => `<span class="talker-name"><span class="dot"></span>${esc(n)}</span>`).join('')
    : '<span class="quiet">Quiet on the channel</span>';
});

phone.addEventListener('talking', (e) => {
  const on = e.detail;
  $('#ptt').classList.toggle('active', on);
  $('#ptt').setAttribute('aria-pressed', String(on));
  $('#ptt').textContent = on ? 'Talking…' : 'Hold to talk';
});

// For the browser console (and tests): the page's two halves.
window.pttbridge = { live, phone };

// ---- what we hear: the <audio> element plays it, an analyser drives the meter ------------------
let ctx = null;
let analyser = null;
let source = null;
function startAudio() {
  // Created in a click: browsers only let a page start audio after a user gesture.
  if (ctx) return;
  ctx = new AudioContext();
  analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  const buf = new Float32Array(analyser.fftSize);
  const draw = () => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    const rms = Math.sqrt(sum / buf.length);
    const dbov = rms > 0 ? 20 * Math.log10(rms) : -127;
    $('#call-meter').style.setProperty('--fill', source ? meterFill(dbov) : 0);
    requestAnimationFrame(draw);
  };
  requestAnimationFrame(draw);
}
phone.addEventListener('track', (e) => {
  const stream = e.detail;
  $('#call-audio').srcObject = stream;
  if (source) source.disconnect();
  source = null;
  if (stream && ctx) {
    source = ctx.createMediaStreamSource(stream);
    source.connect(analyser);
  }
});

// ---- push-to-talk: the button (mouse, touch) and the space bar --------------------------------
const ptt = $('#ptt');
ptt.addEventListener('pointerdown', (e) => {
  ptt.setPointerCapture(e.pointerId);
  phone.talk(true);
});
for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) {
  ptt.addEventListener(type, () => phone.talk(false));
}
const typing = (el) => el && (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA' || el.tagName === 'SELECT');
document.addEventListener('keydown', (e) => {
  if (e.code !== 'Space' || !phone.inCall || typing(e.target)) return;
  e.preventDefault(); // no page scroll, no "click" on a focused button
  if (!e.repeat) phone.talk(true);
});
document.addEventListener('keyup', (e) => {
  if (e.code !== 'Space' || !phone.inCall || typing(e.target)) return;
  e.preventDefault();
  phone.talk(false);
});
window.addEventListener('blur', () => phone.talk(false));
$('#open-mic').addEventListener('change', (e) => phone.setOpenMic(e.target.checked));
// The switch follows the phone: off after a call, or when the microphone cannot be had.
phone.addEventListener('status', () => {
  if (phone.state === 'idle' && phone.openMic) phone.setOpenMic(false);
  $('#open-mic').checked = phone.openMic;
});
