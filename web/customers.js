// Customers (customer management, seed 002): the operators' list with each customer's latest
// server commit (GET /customer/list), its users' and groups' latest commits (GET /user/list,
// /group/list), adding (POST /customer/add, form-encoded; the commit token and info key are shown
// this once) and removing (POST /customer/remove). Signed in by the session cookie.

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function when(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

const hostPort = (host, port) => (host ? `${host}${port ? `:${port}` : ''}` : '');

async function call(method, path, form) {
  const init = { method };
  if (form) {
    init.headers = { 'Content-Type': 'application/x-www-form-urlencoded' };
    init.body = new URLSearchParams(form).toString();
  }
  const r = await fetch(path, init);
  const body = await r.json().catch(() => ({ code: r.status, message: `answered ${r.status}` }));
  if (!r.ok || body.code !== 0) throw new Error(body.message || `answered ${r.status}`);
  return body;
}

export class Customers {
  constructor(root) {
    this.root = root;
    this.list = root.querySelector('#customers-list');
    this.status = root.querySelector('#customers-status');
    this.usage = root.querySelector('#customers-usage');
    this.form = root.querySelector('#customers-form');
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.add();
    });
    this.list.addEventListener('click', (e) => {
      const button = e.target.closest('button[data-action]');
      if (!button) return;
      const row = button.closest('tr');
      if (button.dataset.action === 'usage') this.showUsage(row.dataset.code);
      if (button.dataset.action === 'remove') this.remove(row.dataset.id, row.dataset.code);
    });
  }

  say(text, tone = 'info') {
    this.status.textContent = text;
    this.status.className = `status ${tone}`;
  }

  async load() {
    let body;
    try {
      body = await call('GET', '/customer/list');
    } catch (e) {
      this.say(`cannot list customers: ${e.message}`, 'error');
      return;
    }
    this.list.innerHTML = body.data
      .map((c) => {
        const l = c.latest;
        const latest = l ? `${l.count} users, ${when(l.received_ms)}` : 'no commit yet';
        return `<tr data-id="${esc(c.id)}" data-code="${esc(c.code)}">
          <td>${esc(c.code)}</td><td>${esc(c.name)}</td>
          <td>${esc(hostPort(c.tcphost, c.tcpport))}<span class="meta"> ${esc(hostPort(c.webhost, c.webport))} ${esc(hostPort(c.filehost, c.fileport))}</span></td>
          <td>${esc(c.timeout)}</td><td>${esc(c.contact)} ${esc(c.ctel)}</td><td class="latest">${esc(latest)}</td>
          <td class="actions"><button type="button" data-action="usage">Usage</button>
          <button type="button" class="danger" data-action="remove">Remove</button></td></tr>`;
      })
      .join('');
    if (!this.status.classList.contains('keep')) {
      this.say(body.data.length ? `${body.data.length} customer${body.data.length === 1 ? '' : 's'}.` : 'No customers yet.');
    }
  }

  async add() {
    const form = {};
    for (const input of this.form.querySelectorAll('input[name]')) {
      if (input.value.trim()) form[input.name] = input.value.trim();
    }
    try {
      const body = await call('POST', '/customer/add', form);
      // Shown once: the store keeps only digests.
      this.say(`Added ${body.data.code}. Commit token ${body.commit_token}, info key ${body.info_key} — shown only now.`, 'ok keep');
      this.form.reset();
    } catch (e) {
      this.say(`not added: ${e.message}`, 'error');
      return;
    }
    this.load();
  }

  async remove(id, code) {
    if (!window.confirm(`Remove customer ${code} and all its commits?`)) return;
    try {
      await call('POST', '/customer/remove', { id });
      this.say(`Removed ${code}.`);
      this.usage.innerHTML = '';
    } catch (e) {
      this.say(`not removed: ${e.message}`, 'error');
      return;
    }
    this.load();
  }

  async showUsage(code) {
    let users;
    let groups;
    try {
      const q = `code=${encodeURIComponent(code)}`;
      [users, groups] = await Promise.all([call('GET', `/user/list?${q}`), call('GET', `/group/list?${q}`)]);
    } catch (e) {
      this.say(`cannot read usage: ${e.message}`, 'error');
      return;
    }
    const minutes = (s) => `${Math.round(s / 60)} min`;
    this.usage.innerHTML = `<h3>${esc(code)}: users</h3>
      <table class="archive"><thead><tr><th>User</th><th>Online</th><th>Android</th><th>PC</th><th>iOS</th><th>Sent</th><th>Received</th><th>Committed</th></tr></thead>
      <tbody id="customers-users">${users.data
        .map((u) => `<tr><td>${esc(u.nickname || u.uuid)}</td><td>${minutes(u.onlinetime)}</td><td>${minutes(u.andtimes)}</td><td>${minutes(u.pctimes)}</td>
          <td>${minutes(u.iostimes)}</td><td>${u.fmsgs}</td><td>${u.tmsgs}</td><td>${esc(when(u.received_ms))}</td></tr>`)
        .join('')}</tbody></table>
      <h3>${esc(code)}: groups</h3>
      <table class="archive"><thead><tr><th>Group</th><th>Members</th><th>Messages</th><th>Created</th><th>Committed</th></tr></thead>
      <tbody id="customers-groups">${groups.data
        .map((g) => `<tr><td>${esc(g.name || g.gid)}</td><td>${g.ucount}</td><td>${g.msgcount}</td><td>${esc(g.ctime)}</td><td>${esc(when(g.received_ms))}</td></tr>`)
        .join('')}</tbody></table>`;
  }
}
