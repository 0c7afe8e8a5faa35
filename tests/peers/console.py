#!/usr/bin/env python3
"""An example muicall console for pttbridge, using the third-party `websockets` library.

It follows docs/console.md: JSON requests as text frames, audio as binary frames with a 12-byte
header (version 1, codec, flags, reserved, sequence u32 BE in 10 ms units, source u32 BE).

  console.py --url ws://127.0.0.1:8080/muicall --base-url http://ptt.example.net:8080 \\
             --account zydd --password secret --call 169918,169919 \\
             --play speech.wav --rate 16000 --listen 6 --record heard.wav

Logs in, calls the terminals (requestMic with toIds), talks the WAV (48 kHz mono 16-bit) as PCM16
at --rate, releases the mic, records what the terminals say for --listen seconds (or, with --quiet S,
until S seconds pass without audio after some was heard; PCM16 at --rate, written at 48 kHz), hangs
up and logs out. Every message received is printed as a JSON line; its
own milestones are printed as {"event": ...} lines.
"""

import argparse
import json
import struct
import sys
import time
import wave

import numpy as np
from websockets.sync.client import connect

CODEC = {8000: 1, 16000: 2, 48000: 3}
HEADER = struct.Struct(">BBBBII")


def emit(**kv):
    print(json.dumps(kv, ensure_ascii=False), flush=True)


def resample(x, src, dst):
    """Band-limited resampling by FFT (fine for an example; a real console has its own)."""
    if src == dst:
        return x
    n = int(round(len(x) * dst / src))
    spec = np.fft.rfft(x)
    keep = min(len(spec), n // 2 + 1)
    out = np.fft.irfft(spec[:keep], n) * (n / len(x))
    return out


class Console:
    def __init__(self, ws):
        self.ws = ws
        self.heard = []  # (seq, pcm int16) at the console's rate

    def send(self, msg):
        self.ws.send(json.dumps(msg))

    def wait(self, pred, timeout=15.0):
        """Next JSON message matching pred; binary frames meanwhile are kept."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                m = self.ws.recv(timeout=max(0.01, deadline - time.time()))
            except TimeoutError:
                break
            if isinstance(m, bytes):
                self.on_audio(m)
                continue
            v = json.loads(m)
            print(json.dumps(v, ensure_ascii=False), flush=True)
            if pred(v):
                return v
        raise RuntimeError("no matching message within %ss" % timeout)

    def on_audio(self, frame):
        if len(frame) < HEADER.size:
            return
        _ver, codec, _flags, _rsv, seq, _source = HEADER.unpack_from(frame)
        if codec in (1, 2, 3):
            self.heard.append((seq, np.frombuffer(frame[HEADER.size:], dtype="<i2")))

    def listen(self, seconds, quiet_after=None):
        """Records audio frames for at most `seconds`; with `quiet_after`, stops once audio has
        come and then nothing for that long (the talker finished)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            wait = deadline - time.time()
            if quiet_after is not None and self.heard:
                wait = min(wait, quiet_after)
            try:
                m = self.ws.recv(timeout=max(0.01, wait))
            except TimeoutError:
                break
            if isinstance(m, bytes):
                self.on_audio(m)
            else:
                print(m, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--base-url", required=True)
    p.add_argument("--account", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--call", required=True, help="terminal ids, comma-separated")
    p.add_argument("--play", required=True, help="48 kHz mono 16-bit WAV to say")
    p.add_argument("--rate", type=int, default=16000, choices=sorted(CODEC))
    p.add_argument("--listen", type=float, default=0.0, help="seconds to listen after releasing the mic")
    p.add_argument("--quiet", type=float, default=None,
                   help="stop listening this many seconds after the last frame heard")
    p.add_argument("--record", help="write what was heard here (48 kHz)")
    a = p.parse_args()

    with wave.open(a.play, "rb") as w:
        assert w.getframerate() == 48000 and w.getsampwidth() == 2 and w.getnchannels() == 1, "48 kHz mono 16-bit"
        pcm48 = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    pcm = np.clip(resample(pcm48, 48000, a.rate), -32768, 32767).astype("<i2")
    step = a.rate // 50  # 20 ms

    with connect(a.url, max_size=None) as ws:
        c = Console(ws)
        c.send({"type": "initServer", "data": {"baseUrl": a.base_url}})
        assert c.wait(lambda v: v.get("type") == "initServer")["code"] == 1
        c.send({"type": "connect", "data": {"account": a.account, "password": a.password,
                                            "audio": {"codec": "pcm16", "rate": a.rate}}})
        assert c.wait(lambda v: v.get("type") == "login")["code"] == 1
        ids = [int(x) for x in a.call.split(",")]
        c.send({"type": "requestMic", "toIds": ids, "transaction": int(time.time() * 1000)})
        created = c.wait(lambda v: v.get("type") == "createGroup")
        assert created["code"] == 1, created
        session = created["sessionId"]
        assert c.wait(lambda v: v.get("type") == "requestMic")["code"] == 2
        emit(event="talking", sessionId=session)

        start = time.time()
        frames = [pcm[i:i + step] for i in range(0, len(pcm), step)]
        for i, f in enumerate(frames):
            if len(f) < step:
                f = np.concatenate([f, np.zeros(step - len(f), dtype="<i2")])
            flags = 1 if i == len(frames) - 1 else 0
            delay = start + i * 0.02 - time.time()
            if delay > 0:
                time.sleep(delay)
            ws.send(HEADER.pack(1, CODEC[a.rate], flags, 0, 2 * i, 0) + f.tobytes())
        c.send({"type": "releaseMic"})
        assert c.wait(lambda v: v.get("type") == "releaseMic")["code"] == 1
        emit(event="released", frames=len(frames))

        if a.listen > 0:
            c.listen(a.listen, a.quiet)
            if c.heard:
                seq0 = c.heard[0][0]
                total = (c.heard[-1][0] - seq0) // 2 * step + step
                track = np.zeros(total, dtype=np.int16)
                for seq, s in c.heard:
                    off = (seq - seq0) // 2 * step
                    track[off:off + len(s)] = s[: max(0, total - off)]
            else:
                track = np.zeros(0, dtype=np.int16)
            if a.record:
                up = np.clip(resample(track.astype(np.float64), a.rate, 48000), -32768, 32767).astype("<i2")
                with wave.open(a.record, "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(48000)
                    w.writeframes(up.tobytes())
            rms = float(np.sqrt(np.mean((track.astype(np.float64) / 32768) ** 2))) if len(track) else 0.0
            emit(event="recorded", frames=len(c.heard), seconds=len(track) / a.rate, rms=round(rms, 5))

        c.send({"type": "tempCallHangup", "sessionId": session})
        hung = c.wait(lambda v: v.get("type") == "audioResp" and v.get("cmd") == "tempCallHangup")
        assert hung["data"]["result"]["code"] == 0, hung
        c.send({"type": "loginOut"})
        assert c.wait(lambda v: v.get("type") == "logoutResp")["code"] == 1
        emit(event="done")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report as a JSON line, exit non-zero
        emit(event="error", message="%s: %s" % (type(e).__name__, e))
        sys.exit(1)
