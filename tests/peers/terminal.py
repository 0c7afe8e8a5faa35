#!/usr/bin/env python3
"""A PTT terminal for pttbridge tests, built on the third-party Mumble client pymumble (PyPI, 1.6.1).

It connects to a Mumble-compatible server (Debian's murmurd, or the bridge), joins a channel, and is
driven by JSON lines:

  stdout: one JSON object per line for everything that happens, always with an "event" key:
    {"event":"ready","session":N,"name":"...","channel":"North"}
    {"event":"user_joined","name":..,"session":..,"channel":..}   (connected to the server)
    {"event":"user_left","name":..,"session":..,"channel":..}
    {"event":"user_moved","name":..,"session":..,"from":..,"channel":..}
    {"event":"text","from":..,"session":..,"message":..,"private":bool,"channel":..}
    {"event":"talk_start","name":..,"session":..}  /  {"event":"talk_stop",...,"seconds":..}
        (pymumble senders never set the terminator bit, so "stopped" means 300 ms without voice)
    {"event":"play_done","wav":..,"seconds":..,"wall_seconds":..}
    {"event":"recorded","wav":..,"seconds":..,"rms":..,"peak":..,"speakers":[{"name":..,"wav":..,
        "chunks":..,"first_s":..,"last_s":..,"voice_seconds":..,"reanchors":..,"seq_jumps":..,
        "seq_skipped_ms":..,"rms":..,"peak":..}]}   (seq_jumps: places where the sender skipped
        sequence numbers, i.e. claimed a gap; reanchors: times its timeline was re-based on arrival)
    {"event":"users","channel":..,"users":[{"name":..,"session":..,"muted":..}]}  (muted: by the server)
    {"event":"ack","cmd":..}        (a command was carried out)
    {"event":"error","message":..}  {"event":"disconnected","reason":..}
  Replies to a command (ack, recorded, users, error) carry its "cmd" and echo its "id" when it has one.
  stdin: one JSON command per line:
    {"cmd":"play","wav":"in.wav"}           send a 48 kHz 16-bit WAV as voice in real time (20 ms frames)
    {"cmd":"stop_play"}                     drop what has not been sent yet
    {"cmd":"record_start"}
    {"cmd":"record_stop","wav":"out.wav"}   write the mix of all speakers on one timeline to out.wav and
                                            each speaker to out.wav.<name>.wav (48 kHz mono 16-bit)
                                            and when each chunk arrived to out.wav.chunks.json
    {"cmd":"text","message":"hi"[,"to":"user name"]}   to the current channel, or privately to a user
    {"cmd":"move","channel":"North/Sub"}
    {"cmd":"users"}
    {"cmd":"quit"}                          (end of stdin also quits)

Channel paths are names from the root down joined by "/" ("North", "North/Sub"); the root is "".
Exit status: 0 after quit, 1 when it could not connect/join, 2 when the server went away.
"""

import os

# protobuf 3.12's generated code (pymumble ships it) only imports with the pure-Python implementation
# under newer protobuf runtimes; set it before pymumble is imported.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import argparse  # noqa: E402
import json  # noqa: E402
import ssl  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import wave  # noqa: E402

import numpy as np  # noqa: E402
import pymumble_py3 as pymumble  # noqa: E402
from pymumble_py3 import constants as C  # noqa: E402
from pymumble_py3 import soundoutput  # noqa: E402
from pymumble_py3.tools import VarInt  # noqa: E402

RATE = 48000
SEQUENCE_SECONDS = 0.010  # a Mumble voice sequence number counts 10 ms units
TALK_STOP_AFTER = 0.3  # no terminator bit from pymumble senders: silence this long ends a talk burst
# A sender whose sequence numbers do not follow the clock across a pause (it only counts packets sent)
# would otherwise have the pause collapsed: when a chunk's sequence-derived time and its arrival disagree
# by more than this, the timeline is re-anchored on the arrival time.
REANCHOR_AFTER = 1.0

_out_lock = threading.Lock()


def emit(event, **fields):
    """Print one event as a JSON line (from any thread)."""
    fields = {"event": event, **fields}
    line = json.dumps(fields)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(msg):
    sys.stderr.write("[terminal] %s\n" % msg)
    sys.stderr.flush()


class RealTimeOutput(soundoutput.SoundOutput):
    """pymumble's voice sender with one change, so the terminal sends a WAV the way a terminal with
    the PTT key held does: one 20 ms Opus frame per packet, sequence +2 per packet, in real time.

    pymumble treats any send that is more than 20 ms late as the start of a new burst after a pause
    and jumps the sequence number to the wall clock. On a loaded machine its loop is often that late,
    so the stream it sends claims gaps that are not in the audio, and every receiver that honours
    sequence numbers (as a jitter buffer must) inserts silence there. Here the sequence only follows
    the wall clock when a burst starts (nothing was queued); within a burst a late sender catches up by
    sending the queued frames back to back with consecutive sequence numbers. The packet format is
    pymumble's own (legacy voice packet, Opus, no terminator bit, tunnelled over TCP)."""

    in_burst = False

    def send_audio(self):
        if not self.encoder or len(self.pcm) == 0:
            self.in_burst = False
            return
        if self.codec_type != C.PYMUMBLE_AUDIO_TYPE_OPUS:
            raise RuntimeError("only Opus is supported")
        samples = int(self.encoder_framesize * RATE * 2 * self.channels)
        step = int(round(self.audio_per_packet / SEQUENCE_SECONDS))
        while len(self.pcm) > 0 and self.sequence_last_time + self.audio_per_packet <= time.time():
            now = time.time()
            if self.in_burst:
                self.sequence += step
            elif self.sequence_last_time + C.PYMUMBLE_SEQUENCE_RESET_INTERVAL <= now:
                # long silence: start counting again, as pymumble does
                self.sequence = 0
                self.sequence_start_time = now
            elif self.sequence_last_time + 2 * self.audio_per_packet <= now:
                # short pause: the sequence jumps over it so receivers keep the gap
                self.sequence = int((now - self.sequence_start_time) / SEQUENCE_SECONDS)
            else:
                self.sequence += step
            self.sequence_last_time = self.sequence_start_time + self.sequence * SEQUENCE_SECONDS
            self.in_burst = True

            with self.lock:
                pcm = self.pcm.pop(0)
            if len(pcm) != samples:
                pcm += b"\x00" * (samples - len(pcm))
            encoded = self.encoder.encode(pcm, len(pcm) // (2 * self.channels))
            packet = (
                struct.pack("!B", (self.codec_type << 5) | self.target)
                + VarInt(self.sequence).encode()
                + VarInt(len(encoded)).encode()  # terminator bit (0x2000) never set, like pymumble
                + encoded
            )
            data = struct.pack("!HL", C.PYMUMBLE_MSG_TYPES_UDPTUNNEL, len(packet)) + packet
            while data:
                sent = self.mumble_object.control_socket.send(data)
                if sent < 0:
                    raise OSError("server socket error")
                data = data[sent:]
        if len(self.pcm) == 0:
            self.in_burst = False


class Client(pymumble.Mumble):
    """pymumble with two changes: the real-time sender above, and end-of-stream detection. pymumble
    swallows end-of-stream on the control socket (recv returning b'' or an SSL error), so a dead
    server would only be noticed by its 60 s ping timeout; here EOF ends the connection at once. It
    also drains what the TLS layer has already decrypted, which select() cannot see."""

    lost_reason = None

    def init_connection(self):
        super().init_connection()
        self.sound_output = RealTimeOutput(
            self, C.PYMUMBLE_AUDIO_PER_PACKET, self.bandwidth, stereo=self.stereo,
            opus_profile=self.get_codec_profile())

    def read_control_messages(self):
        while True:
            try:
                buf = self.control_socket.recv(C.PYMUMBLE_READ_BUFFER_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as e:
                self._lost("connection error: %s" % e)
                return
            if not buf:
                self._lost("server closed the connection")
                return
            self.receive_buffer += buf
            if self.control_socket.pending() == 0:
                break

        while len(self.receive_buffer) >= 6:
            (mtype, size) = struct.unpack("!HL", self.receive_buffer[0:6])
            if len(self.receive_buffer) < size + 6:
                break
            message = self.receive_buffer[6 : size + 6]
            self.receive_buffer = self.receive_buffer[size + 6 :]
            self.dispatch_control_message(mtype, message)

    def _lost(self, reason):
        if self.lost_reason is None:
            self.lost_reason = reason
        self.connected = C.PYMUMBLE_CONN_STATE_NOT_CONNECTED


class Speaker:
    """Timeline state of one remote talker."""

    def __init__(self, session, name):
        self.session = session
        self.name = name
        self.anchor_seq = None
        self.anchor_time = 0.0
        self.last_seq = -1
        self.last_arrival = 0.0
        self.talking = False
        self.talk_started = 0.0
        self.last_units = 0

    def place(self, seq, now, units):
        """Wall-clock start of the chunk with this sequence number (covering `units` sequence steps),
        whether the timeline was re-anchored, and how many sequence steps were skipped before it."""
        predicted = None
        skipped = 0
        if self.anchor_seq is not None and seq > self.last_seq:
            skipped = seq - self.last_seq - self.last_units
            predicted = self.anchor_time + (seq - self.anchor_seq) * SEQUENCE_SECONDS
            if abs(predicted - now) > REANCHOR_AFTER:
                predicted = None
        reanchored = False
        if predicted is None:
            # New stream (first chunk, or the sender restarted its sequence after a pause) or a
            # sequence that lost touch with the clock: anchor on the arrival time.
            reanchored = self.anchor_seq is not None
            self.anchor_seq = seq
            self.anchor_time = now
            predicted = now
            skipped = 0
        self.last_seq = seq
        self.last_units = units
        self.last_arrival = now
        return predicted, reanchored, skipped


class Recording:
    """Received chunks of every speaker, placed on one timeline that starts at record_start."""

    def __init__(self):
        self.t0 = time.time()
        self.chunks = {}  # session -> list of (start sample, int16 array)
        self.names = {}  # session -> name
        self.reanchors = {}  # session -> times the timeline was re-anchored on arrival time
        self.seq_jumps = {}  # session -> (places where sequence numbers were skipped, steps skipped)
        self.timeline = []  # (session, sequence, arrival s, placed s, samples): kept beside the WAV

    def note(self, session, reanchored, skipped):
        self.reanchors[session] = self.reanchors.get(session, 0) + int(reanchored)
        jumps, steps = self.seq_jumps.get(session, (0, 0))
        if skipped:
            jumps, steps = jumps + 1, steps + skipped
        self.seq_jumps[session] = (jumps, steps)

    def add(self, session, name, start_time, pcm, sequence=None, arrival=None):
        offset = int(round((start_time - self.t0) * RATE))
        if arrival is not None:
            self.timeline.append((session, sequence, round(arrival - self.t0, 4),
                                  round(start_time - self.t0, 4), len(pcm) // 2))
        samples = np.frombuffer(pcm, dtype="<i2")
        if offset < 0:  # started before the recording: keep the part inside it
            samples = samples[-offset:]
            offset = 0
        if len(samples):
            self.chunks.setdefault(session, []).append((offset, samples))
            self.names[session] = name

    def finish(self, path):
        end = int(round((time.time() - self.t0) * RATE))
        for chunks in self.chunks.values():
            for off, s in chunks:
                end = max(end, off + len(s))
        mix = np.zeros(end, dtype=np.int32)
        per_speaker = []
        for session, chunks in sorted(self.chunks.items()):
            track = np.zeros(end, dtype=np.int16)
            for off, s in chunks:
                # assignment, not addition: a duplicated sequence must not double the level
                track[off : off + len(s)] = s
            mix += track
            name = self.names[session]
            # a user name may hold anything; keep the file name safe
            spath = "%s.%s.wav" % (path, "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name))
            write_wav(spath, track)
            jumps, steps = self.seq_jumps.get(session, (0, 0))
            per_speaker.append(
                {
                    "name": name,
                    "session": session,
                    "wav": spath,
                    "chunks": len(chunks),
                    "first_s": round(chunks[0][0] / RATE, 4),
                    "last_s": round(max(o + len(s) for o, s in chunks) / RATE, 4),
                    "voice_seconds": round(sum(len(s) for _, s in chunks) / RATE, 4),
                    "reanchors": self.reanchors.get(session, 0),
                    "seq_jumps": jumps,
                    "seq_skipped_ms": round(steps * SEQUENCE_SECONDS * 1000),
                    **level_stats(track),
                }
            )
        mixed = np.clip(mix, -32768, 32767).astype(np.int16)
        write_wav(path, mixed)
        # When each chunk arrived and where it was placed: how a gap in a recording came to be.
        with open(path + ".chunks.json", "w") as f:
            json.dump(self.timeline, f)
        return {"wav": path, "seconds": round(end / RATE, 4), **level_stats(mixed), "speakers": per_speaker}


def level_stats(samples):
    if len(samples) == 0:
        return {"rms": 0.0, "peak": 0.0}
    f = samples.astype(np.float64) / 32768.0
    return {"rms": round(float(np.sqrt(np.mean(f * f))), 5), "peak": round(float(np.max(np.abs(f))), 5)}


def write_wav(path, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def read_wav(path):
    """16-bit PCM at 48 kHz, mono or stereo (averaged) -> mono little-endian bytes."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getframerate() != RATE:
            raise ValueError(
                "%s: need 16-bit 48000 Hz, got %d-bit %d Hz" % (path, 8 * w.getsampwidth(), w.getframerate())
            )
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        ch = w.getnchannels()
    if ch > 1:
        data = data.reshape(-1, ch).astype(np.int32).mean(axis=1).astype(np.int16)
    return data.astype("<i2").tobytes()


class Terminal:
    def __init__(self, args):
        self.args = args
        self.ready = False
        self.quitting = False
        self.lock = threading.Lock()
        self.speakers = {}  # session -> Speaker
        self.recording = None
        self.user_channels = {}  # session -> channel id, to tell "from" in user_moved
        self.play_gen = 0

        m = Client(args.host, args.user, port=args.port, password=args.password or "", reconnect=False)
        self.m = m
        m.set_receive_sound(True)
        cb = m.callbacks
        cb.set_callback(C.PYMUMBLE_CLBK_USERCREATED, self.on_user_created)
        cb.set_callback(C.PYMUMBLE_CLBK_USERUPDATED, self.on_user_updated)
        cb.set_callback(C.PYMUMBLE_CLBK_USERREMOVED, self.on_user_removed)
        cb.set_callback(C.PYMUMBLE_CLBK_TEXTMESSAGERECEIVED, self.on_text)
        cb.set_callback(C.PYMUMBLE_CLBK_SOUNDRECEIVED, self.on_sound)
        cb.set_callback(C.PYMUMBLE_CLBK_PERMISSIONDENIED, self.on_denied)
        cb.set_callback(C.PYMUMBLE_CLBK_DISCONNECTED, self.on_disconnected)

    # ---- helpers ----------------------------------------------------------------------------
    def channel_path(self, cid):
        parts = []
        chans = self.m.channels
        while cid in chans and cid != 0:
            ch = chans[cid]
            parts.insert(0, ch["name"])
            cid = ch.get("parent", 0)
        return "/".join(parts)

    def find_channel(self, path):
        if path == "":
            return self.m.channels[0]
        return self.m.channels.find_by_tree(path.split("/"))

    def my_channel_id(self):
        me = self.m.users.myself
        return me["channel_id"] if me else None

    def name_of(self, session):
        u = self.m.users.get(session)
        return u["name"] if u and "name" in u else None

    def wait_for(self, pred, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.02)
        return pred()

    # ---- pymumble callbacks (run in pymumble's thread) -----------------------------------------
    def on_user_created(self, user):
        self.user_channels[user["session"]] = user["channel_id"]
        if self.ready:
            emit("user_joined", name=user.get("name"), session=user["session"],
                 channel=self.channel_path(user["channel_id"]))

    def on_user_updated(self, user, actions):
        if "channel_id" not in actions:
            return
        old = self.user_channels.get(user["session"])
        self.user_channels[user["session"]] = user["channel_id"]
        if self.ready:
            emit("user_moved", name=user.get("name"), session=user["session"],
                 channel=self.channel_path(user["channel_id"]),
                 **{"from": self.channel_path(old) if old is not None else None})

    def on_user_removed(self, user, message):
        self.user_channels.pop(user["session"], None)
        with self.lock:
            sp = self.speakers.pop(user["session"], None)
        if sp and sp.talking:
            emit("talk_stop", name=sp.name, session=sp.session, seconds=round(sp.last_arrival - sp.talk_started, 3))
        if self.ready:
            emit("user_left", name=user.get("name"), session=user["session"],
                 channel=self.channel_path(user["channel_id"]))

    def on_text(self, mess):
        actor = mess.actor if mess.HasField("actor") else None
        me = self.m.users.myself_session
        emit("text", message=mess.message, session=actor,
             private=me in list(mess.session),
             channel=self.channel_path(mess.channel_id[0]) if len(mess.channel_id) else None,
             **{"from": self.name_of(actor) if actor is not None else None})

    def on_sound(self, user, chunk):
        now = time.time()
        session = user["session"]
        with self.lock:
            sp = self.speakers.get(session)
            if sp is None:
                sp = self.speakers[session] = Speaker(session, user.get("name", str(session)))
            units = max(1, int(round(chunk.duration / SEQUENCE_SECONDS)))
            start, reanchored, skipped = sp.place(chunk.sequence, now, units)
            started = not sp.talking
            if started:
                sp.talking = True
                sp.talk_started = now
            if self.recording is not None:
                self.recording.note(session, reanchored, skipped)
                self.recording.add(session, sp.name, start, chunk.pcm, chunk.sequence, now)
        if started:
            emit("talk_start", name=sp.name, session=session)

    def on_denied(self, mess):
        emit("error", message="permission denied: %s %s" % (self.m.denial_type(mess.type), mess.reason))

    def on_disconnected(self):
        if self.quitting:
            return
        emit("disconnected", reason=self.m.lost_reason or "connection lost")
        sys.stdout.flush()
        os._exit(2)

    # ---- background work -------------------------------------------------------------------
    def talk_watch(self):
        """Ends talk bursts after TALK_STOP_AFTER of silence (there is no terminator bit to wait for)."""
        while True:
            time.sleep(0.05)
            now = time.time()
            stopped = []
            with self.lock:
                for sp in self.speakers.values():
                    if sp.talking and now - sp.last_arrival > TALK_STOP_AFTER:
                        sp.talking = False
                        stopped.append((sp.name, sp.session, sp.last_arrival - sp.talk_started))
            for name, session, secs in stopped:
                emit("talk_stop", name=name, session=session, seconds=round(secs, 3))

    def play_watch(self, gen, path, seconds, t0):
        # pymumble paces the buffer itself (one 20 ms packet per 20 ms); wait until it is empty.
        while self.m.sound_output.get_buffer_size() > 0 and self.play_gen == gen:
            time.sleep(0.01)
        if self.play_gen == gen:
            emit("play_done", wav=path, seconds=round(seconds, 4), wall_seconds=round(time.time() - t0, 4))

    # ---- commands ----------------------------------------------------------------------------
    def command(self, c):
        cmd = c.get("cmd")
        ack = {"cmd": cmd}
        if "id" in c:
            ack["id"] = c["id"]
        if cmd == "play":
            pcm = read_wav(c["wav"])
            seconds = len(pcm) / 2 / RATE
            self.play_gen += 1
            self.m.sound_output.add_sound(pcm)
            threading.Thread(target=self.play_watch, args=(self.play_gen, c["wav"], seconds, time.time()),
                             daemon=True).start()
            emit("ack", seconds=round(seconds, 4), **ack)
        elif cmd == "stop_play":
            self.play_gen += 1
            self.m.sound_output.clear_buffer()
            emit("ack", **ack)
        elif cmd == "record_start":
            with self.lock:
                self.recording = Recording()
            emit("ack", **ack)
        elif cmd == "record_stop":
            with self.lock:
                rec, self.recording = self.recording, None
            if rec is None:
                raise ValueError("record_stop without record_start")
            stats = rec.finish(c["wav"])
            emit("recorded", **stats, **ack)
        elif cmd == "text":
            to = c.get("to")
            if to:
                users = [u for u in self.m.users.values() if u.get("name") == to]
                if not users:
                    raise ValueError("no user named %r" % to)
                users[0].send_text_message(c["message"])
            else:
                self.m.channels[self.my_channel_id()].send_text_message(c["message"])
            emit("ack", **ack)
        elif cmd == "move":
            target = self.find_channel(c["channel"])
            target.move_in()
            if not self.wait_for(lambda: self.my_channel_id() == target["channel_id"], 10):
                raise RuntimeError("server did not move us to %r" % c["channel"])
            emit("ack", channel=self.channel_path(target["channel_id"]), **ack)
        elif cmd == "users":
            cid = self.my_channel_id()
            users = [{"name": u.get("name"), "session": u["session"],
                      "muted": bool(u.get("mute") or u.get("suppress"))}
                     for u in list(self.m.users.values()) if u["channel_id"] == cid]
            emit("users", channel=self.channel_path(cid), users=users, **ack)
        elif cmd == "quit":
            self.quit(0)
        else:
            raise ValueError("unknown command %r" % cmd)

    def quit(self, code):
        self.quitting = True
        try:
            self.m.stop()
        except Exception:  # the socket may already be gone
            pass
        sys.stdout.flush()
        os._exit(code)

    # ---- main ----------------------------------------------------------------------------------
    def run(self):
        self.m.start()
        # pymumble's is_ready() waits forever; poll its ready lock with a deadline instead.
        if not self.m.ready_lock.acquire(timeout=self.args.timeout):
            emit("error", message="no answer from %s:%d within %ss" % (self.args.host, self.args.port, self.args.timeout))
            self.quit(1)
        self.m.ready_lock.release()
        if self.m.connected != C.PYMUMBLE_CONN_STATE_CONNECTED:
            emit("error", message="could not connect to %s:%d (rejected or refused)" % (self.args.host, self.args.port))
            self.quit(1)
        # the server sends our own UserState before ServerSync; wait until pymumble has filed it
        self.wait_for(lambda: self.m.users.myself is not None, 5)
        if self.args.channel is not None:
            try:
                target = self.find_channel(self.args.channel)
            except Exception as e:
                emit("error", message="channel %r: %s" % (self.args.channel, e))
                self.quit(1)
            if self.my_channel_id() != target["channel_id"]:
                target.move_in()
                if not self.wait_for(lambda: self.my_channel_id() == target["channel_id"], 10):
                    emit("error", message="server did not move us to %r" % self.args.channel)
                    self.quit(1)
        self.ready = True
        threading.Thread(target=self.talk_watch, daemon=True).start()
        emit("ready", session=self.m.users.myself_session, name=self.args.user,
             channel=self.channel_path(self.my_channel_id()))

        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            c = None
            try:
                c = json.loads(line)
                self.command(c)
            except Exception as e:  # report and keep going: one bad command must not end the terminal
                extra = {}
                if isinstance(c, dict):
                    extra = {k: c[k] for k in ("cmd", "id") if k in c}
                emit("error", message="%s: %s" % (type(e).__name__, e), command=line, **extra)
        self.quit(0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=64738)
    p.add_argument("--user", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--channel", help='channel path, e.g. "North" or "Parent/Child"; default: where the server puts us')
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the server to accept us")
    args = p.parse_args()
    Terminal(args).run()


if __name__ == "__main__":
    main()
