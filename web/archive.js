// The archive: recorded talk bursts, searched by channel, talker and time (GET /v1/archive/bursts),
// played in the page (the <audio> element fetches the Ogg Opus file with range requests, signed in
// by the session cookie), downloaded or deleted.

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const PAGE_SIZE = 20;

function when(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}

function size(bytes) {
  return bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} KB`;
}

export class Archive {
  constructor(root) {
    this.root = root;
    this.page = 1;
    this.form = root.querySelector('#archive-form');
    this.list = root.querySelector('#archive-list');
    this.status = root.querySelector('#archive-status');
    this.audio = root.querySelector('#archive-audio');
    this.playing = root.querySelector('#archive-playing');
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.page = 1;
      this.load();
    });
    root.querySelector('#archive-prev').addEventListener('click', () => {
      if (this.page > 1) {
        this.page -= 1;
        this.load();
      }
    });
    root.querySelector('#archive-next').addEventListener('click', () => {
      this.page += 1;
      this.load();
    });
    this.list.addEventListener('click', (e) => {
      const button = e.target.closest('button[data-action]');
      if (!button) return;
      const row = button.closest('tr');
      if (button.dataset.action === 'play') this.play(row.dataset.url, row.dataset.label);
      if (button.dataset.action === 'delete') this.remove(row.dataset.id, row.dataset.label);
    });
  }

  query() {
    const q = new URLSearchParams({ page: this.page, page_size: PAGE_SIZE });
    const f = (id) => this.root.querySelector(id).value.trim();
    if (f('#archive-channel')) q.set('channel', f('#archive-channel'));
    if (f('#archive-talker')) q.set('talker', f('#archive-talker'));
    // <input type="date"> gives yyyy-MM-dd: the archive takes whole days (the end day included, UTC).
    if (f('#archive-from')) q.set('from', f('#archive-from'));
    if (f('#archive-to')) q.set('to', f('#archive-to'));
    return q;
  }

  say(text, tone = 'info') {
    this.status.textContent = text;
    this.status.className = `status ${tone}`;
  }

  async load() {
    let body;
    try {
      const r = await fetch(`/v1/archive/bursts?${this.query()}`);
      body = await r.json();
      if (!r.ok || body.code !== 0) {
        this.say(body.message || `the archive answered ${r.status}`, 'error');
        return;
      }
    } catch (e) {
      this.say(`cannot reach the archive: ${e.message}`, 'error');
      return;
    }
    const pages = Math.max(1, Math.ceil(body.total / PAGE_SIZE));
    this.root.querySelector('#archive-prev').disabled = this.page <= 1;
    this.root.querySelector('#archive-next').disabled = this.page >= pages;
    this.say(body.total === 0 ? 'No recorded bursts match.' : `${body.total} burst${body.total === 1 ? '' : 's'}, page ${this.page} of ${pages}.`);
    this.list.innerHTML = body.bursts
      .map((b) => {
        const label = `${b.talker} in ${b.channel}, ${when(b.start_ms)}`;
        return `<tr data-id="${b.id}" data-url="${esc(b.url)}" data-label="${esc(label)}">
          <td>${esc(when(b.start_ms))}</td><td>${esc(b.channel)}<span class="meta"> ${esc(b.server)}</span></td>
          <td>${esc(b.talker)}</td><td>${seconds(b.duration_ms)}</td><td>${size(b.size_bytes)}</td>
          <td class="actions"><button type="button" data-action="play">Play</button>
          <a href="${esc(b.url)}" download="${esc(b.file)}">Download</a>
          <button type="button" class="danger" data-action="delete">Delete</button></td></tr>`;
      })
      .join('');
  }

  play(url, label) {
    this.playing.textContent = `Playing: ${label}`;
    this.audio.hidden = false;
    this.audio.src = url;
    this.audio.play().catch((e) => this.say(`cannot play: ${e.message}`, 'error'));
  }

  async remove(id, label) {
    if (!window.confirm(`Delete the recording of ${label}?`)) return;
    const r = await fetch(`/v1/archive/bursts/${encodeURIComponent(id)}`, { method: 'DELETE' });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      this.say(body.message || `delete refused (${r.status})`, 'error');
      return;
    }
    this.load();
  }
}
