// The cluster (docs/cluster.md), from /healthz's `cluster` section (operators): this node and its
// state, the live nodes (their presence keys) and how many accounts each holds, who holds each PTT account and how old its lease is;
// a drain button (POST /v1/cluster/drain, undone by /v1/cluster/undrain; operator session).
// Hidden on a bridge that is not a cluster node.

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const secs = (ms) => (ms == null ? '' : `${(ms / 1000).toFixed(1)} s`);

/** What one lease row says about its age: held ones count up and down, others' until they lapse. */
function age(l) {
  if (l.state === 'held') return `held ${secs(l.held_ms)} · expires in ${secs(l.expires_in_ms)}`;
  if (l.state === 'other') return `renewed ${secs(l.unchanged_ms)} ago, lapses in ${secs(l.lapses_in_ms)}`;
  if (l.state === 'free') return 'released: the next node takes it';
  return '';
}

export class ClusterView {
  constructor(root, refresh) {
    this.root = root;
    this.refresh = refresh;
    this.node = root.querySelector('#cluster-node');
    this.nodes = root.querySelector('#cluster-nodes');
    this.leases = root.querySelector('#cluster-leases');
    this.status = root.querySelector('#cluster-status');
    this.button = root.querySelector('#cluster-drain');
    this.draining = false;
    this.button.addEventListener('click', () => this.toggle());
  }

  /** Shows `/healthz`'s `cluster` (absent: not a cluster node). */
  show(c) {
    this.root.hidden = !c;
    if (!c) return;
    this.draining = c.state === 'draining';
    this.root.dataset.state = c.state;
    const tone = c.state === 'ready' ? 'ok' : 'warn';
    this.node.innerHTML = `This node <b>${esc(c.node_id)}</b> <span class="pill ${tone}">${esc(c.state)}</span>
      <span class="meta">lease ${secs(c.lease_ms)} · bucket ${esc(c.bucket)}</span>`;
    // Live nodes (presence keys) with the accounts each holds and the fair share.
    const members = (c.members || []).map((m) => `${m.node} (${m.held}${m.draining ? ', draining' : ''})`);
    this.nodes.textContent = `Live nodes: ${(members.length ? members : c.nodes || []).join(', ')}`
      + (c.fair_share != null ? ` · fair share ${c.fair_share}` : '');
    this.leases.innerHTML = c.leases
      .map(
        (l) => `<tr data-key="${esc(l.key)}" data-state="${esc(l.state)}" data-owner="${esc(l.owner || '')}">
          <td>${esc(l.server)} / ${esc(l.account)}</td>
          <td>${esc(l.owner || '—')}${l.owner === c.node_id ? ' (this node)' : ''}</td>
          <td>${esc(l.state)}</td><td class="meta">${esc(age(l))}</td></tr>`,
      )
      .join('');
    this.button.textContent = this.draining ? 'Undrain this node' : 'Drain this node';
    this.button.className = this.draining ? 'primary' : 'danger';
  }

  async toggle() {
    const path = this.draining ? '/v1/cluster/undrain' : '/v1/cluster/drain';
    this.button.disabled = true;
    try {
      const r = await fetch(path, { method: 'POST' });
      const body = await r.json().catch(() => ({ message: `answered ${r.status}` }));
      if (!r.ok || body.code !== 0) throw new Error(body.message || `answered ${r.status}`);
      this.status.textContent = this.draining
        ? 'Undrained: this node takes part in the leases again.'
        : 'Draining: each PTT account moves to another node once its channel is quiet.';
      this.status.className = 'status ok';
      this.show(body.cluster);
    } catch (e) {
      this.status.textContent = `Cannot ${this.draining ? 'undrain' : 'drain'}: ${e.message}`;
      this.status.className = 'status error';
    } finally {
      this.button.disabled = false;
    }
    // The hand-over takes a moment: look again soon.
    for (const ms of [500, 1500, 3000]) setTimeout(this.refresh, ms);
  }
}
