// The browser meeting client: dials a PTT channel through the bridge's RTCPeer API exactly as a
// third-party client would (docs/rtcpeer.md), hears the channel, talks with push-to-talk or an
// open mic, and says plainly what went wrong.
//
// Call flow: newAppRoom → enter → doInvite(dial-in id) → onRinging → doAgree → doEvent
// onConnected → publish (our sendonly offer) and, once the channel publishes, play it.

import { login, Refused, Signalling } from './rtcpeer.js';

const ICE_GATHER_MS = 3000;
const ANSWER_TIMEOUT_MS = 40000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A message meant for the user, as is. */
class Plain extends Error {}

/** Why a bridge-side hang-up happened, in words. */
const ENDED = {
  hangup: 'The PTT side hung up.',
  offline: 'The other side went offline.',
  noAnswer: 'No answer.',
};

function micProblem(e) {
  switch (e && e.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Microphone blocked: allow this page to use the microphone to talk. You can still listen.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No microphone found. You can still listen.';
    case 'NotReadableError':
      return 'The microphone is in use by another program. You can still listen.';
    default:
      return `Cannot use the microphone (${(e && e.message) || e}). You can still listen.`;
  }
}

/** Waits until the offer holds its candidates (the bridge takes no trickled ones). */
function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const done = () => {
      if (pc.iceGatheringState !== 'complete') return;
      pc.removeEventListener('icegatheringstatechange', done);
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(resolve, ICE_GATHER_MS);
    pc.addEventListener('icegatheringstatechange', done);
  });
}

/** Offer → `send(sdp)` resolves with the answer → remote description. */
async function negotiate(pc, send) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const answer = await send(pc.localDescription.sdp);
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
}

/**
 * One user's phone. Events: `status` ({state, text, tone}), `talkers` (array of names),
 * `talking` (bool: our microphone is live), `track` (the channel's MediaStream, or null).
 * States: idle, calling, ringing, connected, reconnecting.
 */
export class Phone extends EventTarget {
  state = 'idle';
  sig = null;
  me = null;
  target = null; // {id, label}
  room = null;
  wanted = false; // the user wants to be in a call (drives reconnection)
  pub = null;
  play = null;
  mic = null; // our microphone track (MediaStreamTrack), enabled while we talk
  micProcessed = false; // it has echo cancellation / noise suppression (open mic)
  micPending = null;
  ptt = false;
  openMic = false;
  talkers = new Map(); // member key → name
  #progress = null; // {resolve, reject} while a call is being set up
  #reconnecting = false;

  constructor(credentials) {
    super();
    this.credentials = credentials; // () => {account, name}
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #status(state, text, tone = 'info') {
    this.state = state;
    this.#emit('status', { state, text, tone });
  }

  get inCall() {
    return this.state === 'connected';
  }

  async #connect() {
    if (this.sig && this.sig.open) return;
    const me = await login(this.credentials());
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/rtcpeer`;
    const sig = await Signalling.open(url);
    await sig.request({ module: 'call', method: 'doRegister', SID: me.sid, userId: me.userId, deviceType: 'web' });
    sig.addEventListener('push', (e) => this.#push(e.detail));
    sig.addEventListener('close', () => this.#lost(sig));
    this.sig = sig;
    this.me = me;
  }

  #req(msg) {
    return this.sig.request(msg);
  }

  /** Calls `target` ({id, label}); resolves when the call is up, throws `Plain` otherwise. */
  async dial(target) {
    if (this.state !== 'idle') return;
    this.target = target;
    this.wanted = true;
    this.#status('calling', `Calling ${target.label}…`);
    try {
      await this.#setUp();
      this.#status('connected', `In a call with ${target.label}.`, 'ok');
    } catch (e) {
      this.wanted = false;
      await this.#tearDown(true);
      this.#status('idle', e instanceof Plain ? e.message : `Call failed: ${e.message}`, 'error');
    }
  }

  async #setUp() {
    const { id, label } = this.target;
    try {
      await this.#connect();
    } catch (e) {
      throw new Plain(`Cannot sign in at the bridge: ${e.message}.`);
    }
    const me = this.me.userId;
    const made = await this.#req({
      module: 'room', method: 'newAppRoom', name: `${this.me.name} ⇄ ${label}`,
      numberLimit: 10, roomtype: 1, userId: me,
    });
    this.room = made.roomId;
    await this.#req({ module: 'meeting', method: 'enter', userId: me, roomId: this.room, roomType: 1 });
    let timer;
    const answered = new Promise((resolve, reject) => {
      this.#progress = { resolve, reject };
      timer = setTimeout(() => reject(new Plain(`${label} did not answer.`)), ANSWER_TIMEOUT_MS);
    });
    answered.catch(() => {}).finally(() => clearTimeout(timer));
    try {
      await this.#req({
        module: 'call', method: 'doInvite', ownUserId: me, targetUserId: id, type: 1, roomId: this.room,
      });
    } catch (e) {
      this.#progress = null;
      if (e instanceof Refused && e.code === 1) {
        throw new Plain(`Cannot call ${label}: there is no PTT channel or user online with that number (${e.message}).`);
      }
      throw new Plain(`Cannot call ${label}: ${e.message}.`);
    }
    try {
      await answered;
    } finally {
      this.#progress = null;
    }
    await this.#req({
      module: 'call', method: 'doEvent', ownUserId: me, targetUserId: id,
      event: 'onConnected', roomId: this.room, roomType: 1,
    });
    await this.#publish();
  }

  async #publish() {
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pub = pc;
    const tr = pc.addTransceiver('audio', { direction: 'sendonly' });
    if (this.mic) await tr.sender.replaceTrack(this.mic);
    this.#watch(pc);
    await negotiate(pc, async (sdp) =>
      (await this.#req({ module: 'meeting', method: 'publish', audio: true, video: false, sdp })).sdp);
  }

  async #play(client) {
    if (this.play) return;
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.play = pc;
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.ontrack = (e) => this.#emit('track', e.streams[0] || new MediaStream([e.track]));
    this.#watch(pc);
    try {
      await negotiate(pc, async (sdp) =>
        (await this.#req({ module: 'meeting', method: 'play', client: { id: client }, sdp })).sdp);
    } catch (e) {
      this.#status(this.state, `Cannot hear ${this.target.label}: ${e.message}.`, 'error');
    }
  }

  #watch(pc) {
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'failed' && this.inCall && this.sig && this.sig.open) {
        this.#status('connected', 'The audio connection to the bridge failed.', 'error');
      }
    });
  }

  #push(m) {
    const from = m.ownUserId;
    const t = this.target;
    const fromTarget = t && from === t.id;
    switch (`${m.module}.${m.method}`) {
      case 'call.doEvent':
        if (!fromTarget) break;
        if (m.event === 'onRinging') this.#status('ringing', `Ringing ${t.label}…`);
        if (m.event === 'onBusy') this.#progress?.reject(new Plain(`${t.label} is busy (already in another call).`));
        break;
      case 'call.doAgree':
        if (fromTarget) this.#progress?.resolve();
        break;
      case 'call.reject':
        if (fromTarget) {
          this.#progress?.reject(new Plain(`${t.label} rejected the call.${m.reason ? ` (${ENDED[m.reason] || m.reason})` : ''}`));
        }
        break;
      case 'call.cancel':
        if (fromTarget) this.#ended(ENDED[m.reason] || `${t.label} ended the call.`);
        break;
      case 'meeting.onPublished':
        if (t && m.client && m.client.id === t.id) {
          if (m.published) this.#play(t.id);
          else if (this.inCall) this.#ended(`The link to ${t.label} went down.`);
        }
        break;
      case 'meeting.ExitRoom':
        if (t && m.client && m.client.id === t.id && this.inCall) this.#ended(`${t.label} left the call.`);
        break;
      case 'meeting.onFinish':
        if (m.roomId === this.room) this.#ended('The meeting was closed.');
        break;
      case 'meeting.tiren':
        this.#ended('You were removed from the call.');
        break;
      case 'meeting.memberTalking': {
        // PTT talkers all speak through the channel's member (the dial-in id); `pttUser` tells
        // them apart.
        const member = m.member || {};
        const key = `${member.id}/${member.pttUser ?? ''}`;
        const name = this.me && member.id === this.me.userId ? 'You' : member.name || `#${member.id}`;
        if (m.talking) this.talkers.set(key, name);
        else this.talkers.delete(key);
        this.#emit('talkers', [...this.talkers.values()]);
        break;
      }
      default:
    }
  }

  /** The call ended from the other side. */
  async #ended(text) {
    if (!this.wanted) return;
    this.wanted = false;
    await this.#tearDown(true);
    this.#status('idle', text, 'warn');
  }

  /** Hangs up. */
  async hangUp() {
    this.wanted = false;
    await this.#tearDown(true);
    this.#status('idle', 'Call ended.');
  }

  /** Leaves the call: tells the bridge when `polite` and the socket is up; frees media. */
  async #tearDown(polite) {
    const sig = this.sig;
    const room = this.room;
    if (polite && sig && sig.open && room && this.me) {
      const me = this.me.userId;
      if (this.target) {
        await sig.request({ module: 'call', method: 'cancel', ownUserId: me, targetUserId: this.target.id }).catch(() => {});
      }
      await sig.request({ module: 'meeting', method: 'exit', userId: me, roomId: room }).catch(() => {});
    }
    this.room = null;
    for (const pc of [this.pub, this.play]) if (pc) pc.close();
    this.pub = this.play = null;
    if (this.mic && !this.wanted) {
      this.mic.stop();
      this.mic = null;
    }
    this.ptt = false;
    this.talkers.clear();
    this.#emit('talkers', []);
    this.#emit('track', null);
    this.#applyMic();
  }

  /** The signalling socket closed: a bridge restart or a network problem. */
  async #lost(sig) {
    if (sig !== this.sig) return;
    this.sig = null;
    this.me = null;
    if (!this.wanted) {
      if (this.state !== 'idle') this.#status('idle', 'Lost the connection to the bridge.', 'error');
      return;
    }
    this.#progress?.reject(new Plain('Lost the connection to the bridge.'));
    await this.#tearDown(false);
    this.#status('reconnecting', 'Lost the connection to the bridge — reconnecting…', 'warn');
    if (this.#reconnecting) return; // the loop below is already running
    this.#reconnecting = true;
    try {
      await this.#reconnect();
    } finally {
      this.#reconnecting = false;
    }
  }

  async #reconnect() {
    let delay = 500;
    while (this.wanted) {
      // Equal jitter: many pages must not come back in the same instant.
      await sleep(delay / 2 + (Math.random() * delay) / 2);
      delay = Math.min(delay * 2, 8000);
      if (!this.wanted) return;
      try {
        await this.#setUp();
        this.#status('connected', `The bridge restarted; back in the call with ${this.target.label}.`, 'ok');
        return;
      } catch (e) {
        await this.#tearDown(false);
        this.#status('reconnecting', `Bridge not back yet (${e.message}) — retrying…`, 'warn');
      }
    }
  }

  /** Push-to-talk pressed (true) or released (false). */
  async talk(on) {
    if (!this.inCall) return;
    this.ptt = on;
    if (on) await this.#ensureMic();
    this.#applyMic();
  }

  /** Open mic on or off. */
  async setOpenMic(on) {
    this.openMic = on;
    if (on && this.inCall) await this.#ensureMic();
    this.#applyMic();
  }

  /**
   * The microphone is opened the first time the user talks, not when the call starts: a
   * listener is never asked for it. Push-to-talk takes it raw (the user decides when to send,
   * like a radio; a press must not wait for a new device); open mic needs the browser's echo
   * cancellation and noise suppression, or the channel would hear itself from the speakers, so
   * switching it on reopens a raw microphone with them.
   */
  #ensureMic() {
    const processed = this.openMic;
    const live = this.mic && this.mic.readyState === 'live';
    if (live && (this.micProcessed || !processed)) return Promise.resolve();
    if (this.micPending) return this.micPending.then(() => this.#ensureMic());
    const audio = {
      echoCancellation: processed, noiseSuppression: processed, autoGainControl: processed, channelCount: 1,
    };
    this.micPending = navigator.mediaDevices
      .getUserMedia({ audio })
      .then(async (stream) => {
        const old = this.mic;
        this.mic = stream.getAudioTracks()[0];
        this.micProcessed = processed;
        this.mic.enabled = false;
        const sender = this.pub && this.pub.getSenders()[0];
        if (sender) await sender.replaceTrack(this.mic);
        if (old) old.stop();
      })
      .catch((e) => {
        this.ptt = false;
        this.openMic = false;
        this.#status(this.state, micProblem(e), 'error');
      })
      .finally(() => {
        this.micPending = null;
      });
    return this.micPending;
  }

  #applyMic() {
    const live = !!this.mic && this.inCall && (this.ptt || this.openMic);
    if (this.mic) this.mic.enabled = live;
    this.#emit('talking', live);
  }
}
