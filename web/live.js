// The live view: PTT servers and their channel trees, who is talking (with level meters),
// links, consoles and recent events. A snapshot from /api/state, kept live by /events (hub
// events, SSE) and /api/levels (talkers' audio levels, SSE).

const KINDS = [
  'party.joined', 'party.left', 'talk.started', 'talk.stopped', 'floor.denied', 'call.ringing',
  'call.answered', 'call.ended', 'link.up', 'link.down', 'side.connected', 'side.disconnected',
  'message.text',
];
/** Events after which the snapshot is fetched again (talk is tracked from the events alone). */
const STRUCTURAL = new Set(KINDS.filter((k) => !k.startsWith('talk.') && k !== 'message.text'));
const RECENT = 60;

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const partyKey = (p) => (p ? `${p.side}:${p.id}` : '');
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

/** dBov (−127…0) → meter fill 0…1: speech lives between about −60 and 0. */
export const meterFill = (dbov) => Math.max(0, Math.min(1, (dbov + 60) / 60));

/** `m:ss` (or `h:mm:ss`) of a duration in milliseconds. */
export function duration(ms) {
  const t = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const ss = String(t % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/**
 * A friendly name for a group id, as HTML (escaped): `ptt:local:North` → `North`; a meeting room
 * with a PTT channel linked is named by the channel first, its number secondary (`North · room
 * 600`); other rooms `meeting room 600`. `rooms` maps room numbers to the channel names seen
 * linked into them (so events of a link that has since gone still read the same).
 */
function groupLabel(id, rooms) {
  if (!id) return '';
  const [side, ...rest] = id.split(':');
  if (side === 'ptt') return esc(rest.slice(1).join(':') || '/');
  if (side === 'meeting') {
    const channel = rooms.get(rest[0]);
    return channel
      ? `${esc(channel)} <span class="sub">· room ${esc(rest[0])}</span>`
      : `meeting room ${esc(rest[0])}`;
  }
  if (side === 'console') return `console call ${esc(rest.join(':'))}`;
  return esc(id);
}

export class LiveView {
  state = null;
  talking = new Map(); // party key → {name, group, since}
  levels = new Map(); // party key → dBov
  events = [];
  historyLoaded = false;
  names = new Map(); // party key → last name seen (some events carry only the id)
  online = false;
  rooms = new Map(); // meeting room number → name of the PTT channel linked into it
  linkSince = new Map(); // "dial:room" → when (this page's clock) the link came up
  hangingUp = new Set(); // dial-in ids being hung up
  linkError = '';

  constructor(root) {
    this.root = root;
    this.$ = (sel) => root.querySelector(sel);
    // The operator hangs a link up from the list (the buttons are redrawn with it).
    this.$('#links').addEventListener('click', (e) => {
      const button = e.target.closest('button[data-hangup]');
      if (button) this.hangUp(Number(button.dataset.hangup));
    });
  }

  start() {
    this.#follow();
    this.#meters();
    this.refresh();
    // Link durations tick between snapshots.
    setInterval(() => {
      for (const el of this.root.querySelectorAll('[data-since]')) {
        el.textContent = duration(Date.now() - Number(el.dataset.since));
      }
    }, 1000);
  }

  /** Ends the link of dial-in `dial` (`POST /meeting/links/{id}/hangup`, operator session). */
  async hangUp(dial) {
    if (this.hangingUp.has(dial)) return;
    this.hangingUp.add(dial);
    this.linkError = '';
    this.render();
    try {
      const r = await fetch(`/meeting/links/${encodeURIComponent(dial)}/hangup`, { method: 'POST' });
      if (!r.ok) {
        const body = await r.json().catch(() => ({}));
        this.linkError = `Cannot hang up ${dial}: ${body.message || `the bridge answered ${r.status}`}`;
      }
    } catch (e) {
      this.linkError = `Cannot hang up ${dial}: ${e.message}`;
    } finally {
      this.hangingUp.delete(dial);
    }
    this.render();
    this.refresh();
  }

  async refresh() {
    try {
      const r = await fetch('/api/state');
      this.state = await r.json();
      const since = new Map();
      for (const l of this.state.links) {
        const dial = this.state.dial_in.find((d) => d.user_id === l.dial_in);
        if (dial) this.rooms.set(String(l.room), dial.name || dial.channel || String(l.dial_in));
        if (l.up_ms != null) since.set(`${l.dial_in}:${l.room}`, Date.now() - l.up_ms);
      }
      this.linkSince = since;
      if (!this.historyLoaded) {
        // Once: what happened before the page opened, behind what the stream brought since.
        this.historyLoaded = true;
        const seen = new Set(this.events.map((e) => `${e.app_id}:${e.version}`));
        const older = (this.state.recent_events || [])
          .filter((e) => !seen.has(`${e.app_id}:${e.version}`))
          .reverse();
        this.events = this.events.concat(older).slice(0, RECENT);
      }
      // The snapshot knows who talks right now (the hub's model); keep start times we saw.
      const now = new Map();
      for (const g of this.state.groups) {
        for (const m of g.members) {
          if (m.talking) now.set(m.party, this.talking.get(m.party) || { name: m.name, group: g.id, since: Date.now() });
        }
      }
      this.talking = now;
      for (const g of this.state.groups) for (const m of g.members) if (m.name) this.names.set(m.party, m.name);
      for (const o of this.state.online) if (o.name) this.names.set(o.party, o.name);
      this.render();
      this.root.dispatchEvent(new CustomEvent('state', { detail: this.state }));
    } catch (e) {
      console.warn('live view: /api/state failed', e);
    }
  }

  #refreshSoon() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.refresh(), 150);
  }

  #follow() {
    const es = new EventSource('/events');
    es.onopen = () => {
      this.#setOnline(true);
      this.refresh();
    };
    // The browser retries on its own; say so meanwhile.
    es.onerror = () => this.#setOnline(false);
    for (const kind of KINDS) es.addEventListener(kind, (e) => this.#event(JSON.parse(e.data)));
    es.addEventListener('lagged', () => this.refresh());
  }

  #meters() {
    const es = new EventSource('/api/levels');
    es.addEventListener('levels', (e) => {
      const { levels } = JSON.parse(e.data);
      this.levels = new Map(levels.map((l) => [l.party, l.dbov]));
      for (const el of this.root.querySelectorAll('[data-meter]')) {
        const dbov = this.levels.get(el.dataset.meter);
        el.style.setProperty('--fill', dbov === undefined ? 0 : meterFill(dbov));
        el.classList.toggle('measured', dbov !== undefined);
      }
    });
  }

  #setOnline(on) {
    if (this.online === on) return;
    this.online = on;
    this.root.dispatchEvent(new CustomEvent('bridge', { detail: on }));
    this.render();
  }

  #event(ev) {
    const key = partyKey(ev.party);
    if (key && ev.party.name) this.names.set(key, ev.party.name);
    if (ev.type === 'talk.started' && key) {
      this.talking.set(key, { name: ev.party.name, group: ev.group_id, since: ev.time_ms || Date.now() });
    } else if (ev.type === 'talk.stopped' && key) {
      this.talking.delete(key);
      this.levels.delete(key);
    }
    this.events.unshift(ev);
    this.events.length = Math.min(this.events.length, RECENT);
    if (STRUCTURAL.has(ev.type)) this.#refreshSoon();
    this.render();
  }

  render() {
    const s = this.state;
    this.$('#live-offline').hidden = this.online;
    this.$('#on-air').innerHTML = this.#onAir();
    if (!s) return;
    this.$('#servers').innerHTML = s.ptt.map((srv) => this.#server(srv)).join('') ||
      '<p class="empty">No PTT servers configured.</p>';
    this.$('#links').innerHTML = this.#links();
    this.$('#consoles').innerHTML = this.#consoles();
    this.$('#events').innerHTML = this.events.map((e) => this.#eventRow(e)).join('') ||
      '<li class="empty">Waiting for something to happen…</li>';
  }

  #meter(key) {
    const dbov = this.levels.get(key);
    const fill = dbov === undefined ? 0 : meterFill(dbov);
    return `<span class="meter${dbov === undefined ? '' : ' measured'}" data-meter="${esc(key)}" style="--fill:${fill}"></span>`;
  }

  #onAir() {
    if (this.talking.size === 0) return '<p class="empty">Nobody is talking.</p>';
    return [...this.talking].map(([key, t]) => `
      <div class="talker" data-party="${esc(key)}">
        <span class="dot"></span>
        <span class="who">${esc(t.name || key)}</span>
        <span class="where">${groupLabel(t.group, this.rooms)}</span>
        ${this.#meter(key)}
      </div>`).join('');
  }

  #server(srv) {
    const byParent = new Map();
    for (const c of srv.channels) {
      const k = c.parent ?? 'root';
      if (!byParent.has(k)) byParent.set(k, []);
      byParent.get(k).push(c);
    }
    const tree = (parent) => (byParent.get(parent) || [])
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((c) => `
        <li class="channel${c.temporary ? ' temporary' : ''}">
          <span class="channel-name">${esc(c.name)}</span>
          <ul class="users">${c.users.map((u) => this.#user(u)).join('')}</ul>
          <ul class="channels">${tree(c.id)}</ul>
        </li>`).join('');
    const reason = srv.accounts.map((a) => a.reason).filter(Boolean)[0];
    return `
      <article class="server">
        <header>
          <h3>${esc(srv.id)}</h3>
          <span class="addr">${esc(srv.host)}:${srv.port}</span>
          <span class="pill ${srv.state === 'connected' ? 'ok' : 'warn'}">${esc(srv.state)}</span>
        </header>
        ${reason ? `<p class="reason">${esc(reason)}</p>` : ''}
        <ul class="tree">${tree('root')}</ul>
      </article>`;
  }

  #user(u) {
    const talking = this.talking.has(u.party);
    return `
      <li class="user${talking ? ' talking' : ''}${u.bridge ? ' bridge' : ''}" data-party="${esc(u.party)}">
        <span class="dot"></span>${esc(u.name)}
        ${u.bridge ? '<span class="tag">bridge</span>' : ''}
        ${u.muted ? '<span class="tag">muted</span>' : ''}
        ${talking ? this.#meter(u.party) : ''}
      </li>`;
  }

  #links() {
    const s = this.state;
    const rows = [];
    for (const l of s.links) {
      const dial = s.dial_in.find((d) => d.user_id === l.dial_in);
      const room = s.groups.find((g) => g.id === `meeting:${l.room}`);
      const who = room ? room.members.filter((m) => m.side === 'meeting').map((m) => m.name || m.party) : [];
      const since = this.linkSince.get(`${l.dial_in}:${l.room}`);
      const busy = this.hangingUp.has(l.dial_in);
      rows.push(`<li class="link" data-dial="${esc(l.dial_in)}">
        <span class="kind">PTT</span> <span class="name">${esc(dial ? dial.name || dial.channel : l.dial_in)}</span>
        <span class="sub">${esc(l.dial_in)}</span>
        <span class="arrow">⇄</span> <span class="kind">meeting</span> ${esc(who.join(', ') || 'nobody yet')}
        <span class="sub">room ${esc(l.room)}</span>
        <span class="duration" title="linked for"${since === undefined ? '>linking…' : ` data-since="${since}">${duration(Date.now() - since)}`}</span>
        <button type="button" class="danger small" data-hangup="${esc(l.dial_in)}"${busy ? ' disabled' : ''}>${busy ? 'Hanging up…' : 'Hang up'}</button>
      </li>`);
    }
    for (const g of s.groups.filter((g) => g.id.startsWith('console:'))) {
      const consoles = g.members.filter((m) => m.side === 'console').map((m) => m.name || m.party);
      const others = g.members.filter((m) => m.side !== 'console').map((m) => m.name || m.party);
      rows.push(`<li><span class="kind">console</span> ${esc(consoles.join(', ') || g.id)}
        <span class="arrow">⇄</span> ${esc(others.join(', ') || 'no terminals yet')}</li>`);
    }
    const dials = s.dial_in.map((d) => `${esc(d.name)} <code>${d.user_id}</code>`).join(', ');
    return (rows.length ? `<ul class="rows">${rows.join('')}</ul>` : '<p class="empty">No links right now.</p>') +
      (this.linkError ? `<p class="status error">${esc(this.linkError)}</p>` : '') +
      (dials ? `<p class="hint">Callable PTT channels: ${dials}</p>` : '');
  }

  #consoles() {
    const list = this.state.online.filter((o) => o.side === 'console');
    if (list.length === 0) return '<p class="empty">No consoles logged in.</p>';
    return `<ul class="rows">${list.map((o) => `<li><span class="dot on"></span>${esc(o.name || o.party)}</li>`).join('')}</ul>`;
  }

  #eventRow(e) {
    const key = partyKey(e.party);
    const who = e.party ? e.party.name || this.names.get(key) || key : '';
    const d = e.detail || {};
    const extra = e.type === 'message.text' ? d.text || d.message || '' : d.reason || '';
    return `<li class="ev ${esc(e.type.replace('.', '-'))}">
      <time>${clock(e.time_ms || Date.now())}</time>
      <span class="chip">${esc(e.type)}</span>
      <span class="who">${esc(who)}</span>
      <span class="where">${groupLabel(e.group_id, this.rooms)}</span>
      ${extra ? `<span class="extra">${esc(extra)}</span>` : ''}
    </li>`;
  }
}
