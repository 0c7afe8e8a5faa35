#!/usr/bin/env python3
"""A 527meeting RTCPeer participant for pttbridge tests, on the third-party WebRTC stack aiortc
(PyPI 1.16.0) and the websockets client.

It logs in over HTTP (GET /app/getSign, POST /app/account method=dockingLogin), opens the
/rtcpeer WebSocket, registers (call.doRegister), and is then driven by JSON lines. An https://
--url is HTTPS and wss:// (certificates checked: against --ca FILE when given, else the system's
roots).

  stdout: one JSON object per line, always with an "event" key:
    {"event":"ready","user":{...},"sid":"..."}
    {"event":"ws","msg":{...}}                  every frame the server sent (replies and pushes)
    {"event":"published","sdp_answer":"..."} / {"event":"playing","client":N}
    {"event":"track","client":N}                the first audio frame of a played stream arrived
    {"event":"speak_done","seconds":..}
    {"event":"recorded","wav":..,"seconds":..,"frames":..,"pts_steps":{...},"pts_odd":[..]}
    {"event":"pc_state","pc":"publish"|"play:N","state":..}
    {"event":"error","message":..}
  stdin commands:
    {"cmd":"send","msg":{...}}                  send a JSON request as is
    {"cmd":"raw","text":"..."}                  send any text frame (bad-input tests)
    {"cmd":"publish"[,"video":true][,"codec":"PCMU"]}   RTCPeerConnection sending one audio track
                                                (silent until "speak"); with video, also a video
                                                m-line the server should decline; with codec, only
                                                that audio codec is offered; meeting.publish + sdp
    {"cmd":"speak","wav":"in.wav"}              send a 48 kHz mono 16-bit WAV in real time
    {"cmd":"play","client":N[,"video":true][,"codec":"PCMU"]}   recvonly peer for client N
                                                (meeting.play + sdp); with video, also a recvonly
                                                video m-line; with codec, only that audio codec
    {"cmd":"record_start"} / {"cmd":"record_stop","wav":"out.wav"}   what the played streams
                                                delivered, on the RTP timeline (gaps kept), as
                                                48 kHz (8 kHz G.711 is resampled; pts_steps stay
                                                in the codec's clock)
    {"cmd":"close"}                             close every peer connection
    {"cmd":"quit"}

ICE stays on loopback: aioice is told 127.0.0.1 is the only host address and no ICE servers are
used (aiortc otherwise skips 127.0.0.1 and adds a public STUN server).
"""

import argparse
import asyncio
import fractions
import json
import ssl
import sys
import time
import urllib.parse
import urllib.request
import wave

import aioice.ice
import numpy as np
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from av import AudioFrame, AudioResampler

RATE = 48000
FRAME = 960

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def emit(event, **fields):
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def log(msg):
    sys.stderr.write("[meeting] %s\n" % msg)
    sys.stderr.flush()


def only_codec(transceiver, codec):
    """Offer only `codec` (e.g. "PCMU") on this audio transceiver."""
    if codec:
        caps = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() == "audio/" + codec.lower()])


def loopback_only(sdp):
    """Drop every ICE candidate that is not on 127.0.0.1 (both directions)."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") and " 127.0.0.1 " not in line:
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def resample(audio, rate):
    """Mono int16 at `rate` → 48 kHz, in one pass (libswresample through PyAV)."""
    frame = AudioFrame.from_ndarray(audio.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    r = AudioResampler(format="s16", layout="mono", rate=RATE)
    out = [f.to_ndarray().reshape(-1) for f in r.resample(frame) + r.resample(None)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


class WavTrack(AudioStreamTrack):
    """Mono 48 kHz audio in 20 ms frames, paced in real time; silence when nothing is queued."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.queue = np.zeros(0, dtype=np.int16)
        self.pts = 0
        self.start = None
        self.done = None

    def speak(self, samples, done):
        self.queue = np.concatenate([self.queue, samples])
        self.done = done

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.time()
        wait = self.start + self.pts / RATE - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self.queue[:FRAME]
        self.queue = self.queue[FRAME:]
        if len(chunk) < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), dtype=np.int16)])
            if self.done is not None and len(self.queue) == 0:
                done, self.done = self.done, None
                done()
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RATE)
        self.pts += FRAME
        return frame


class Participant:
    def __init__(self, args):
        self.args = args
        self.ws = None
        self.replies = {}
        self.waiters = []
        self.publish_pc = None
        self.track = None
        self.plays = {}
        self.recording = None
        # None for http://: urllib and websockets then use plain TCP.
        self.ssl = ssl.create_default_context(cafile=args.ca) if args.url.startswith("https://") else None

    def http(self, path, data=None):
        url = self.args.url.rstrip("/") + path
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(url, data=body)
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        with urllib.request.urlopen(req, timeout=10, context=self.ssl) as r:
            return json.loads(r.read().decode())

    async def login(self):
        sign = self.http("/app/getSign?" + urllib.parse.urlencode({"appId": self.args.app_id, "secret": self.args.secret}))
        if sign.get("code") != 200:
            raise RuntimeError("getSign failed: %s" % sign)
        login = self.http("/app/account", {"method": "dockingLogin", "account": self.args.account,
                                           "userName": self.args.account, "sign": sign["data"]})
        if login.get("result") != 0:
            raise RuntimeError("dockingLogin failed: %s" % login)
        self.user = login["user"]
        self.sid = login["SID"]
        base = self.args.url.rstrip("/")
        ws_url = "wss://" + base[len("https://"):] if self.ssl else base.replace("http://", "ws://", 1)
        self.ws = await websockets.connect(ws_url + "/rtcpeer", max_size=2**20, ssl=self.ssl)
        asyncio.ensure_future(self.reader())
        reply = await self.request({"module": "call", "method": "doRegister", "SID": self.sid,
                                    "userId": self.user["id"], "deviceType": "pc"})
        if reply.get("result") != 0:
            raise RuntimeError("doRegister failed: %s" % reply)
        emit("ready", user=self.user, sid=self.sid)

    async def reader(self):
        try:
            async for text in self.ws:
                try:
                    msg = json.loads(text)
                except ValueError:
                    emit("error", message="server sent non-JSON: %r" % text[:200])
                    continue
                emit("ws", msg=msg)
                if "result" in msg:
                    for w in list(self.waiters):
                        if w[0] == (msg.get("module"), msg.get("method")) and not w[1].done():
                            w[1].set_result(msg)
                            self.waiters.remove(w)
                            break
            # A clean close (1000/1001) ends the loop without an exception.
            emit("ws_closed", code=self.ws.close_code, reason=self.ws.close_reason)
        except websockets.ConnectionClosed as e:
            emit("ws_closed", code=e.code, reason=e.reason)

    async def request(self, msg, timeout=15):
        fut = asyncio.get_event_loop().create_future()
        self.waiters.append(((msg.get("module"), msg.get("method")), fut))
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, timeout)

    def watch(self, pc, name):
        @pc.on("connectionstatechange")
        async def on_state():
            emit("pc_state", pc=name, state=pc.connectionState)

    async def publish(self, cmd):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.watch(pc, "publish")
        self.track = WavTrack()
        only_codec(pc.addTransceiver(self.track, direction="sendonly"), cmd.get("codec"))
        if cmd.get("video"):
            pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = loopback_only(pc.localDescription.sdp)
        reply = await self.request({"module": "meeting", "method": "publish", "audio": True,
                                    "video": bool(cmd.get("video")), "sdp": sdp})
        if reply.get("result") != 0:
            emit("publish_failed", reply=reply)
            await pc.close()
            return
        await pc.setRemoteDescription(RTCSessionDescription(loopback_only(reply["sdp"]), "answer"))
        self.publish_pc = pc
        emit("published", sdp_answer=reply["sdp"])

    async def speak(self, cmd):
        with wave.open(cmd["wav"], "rb") as w:
            if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
                emit("error", message="speak needs a 48 kHz mono 16-bit WAV")
                return
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        t0 = time.time()
        loop = asyncio.get_event_loop()
        self.track.speak(samples, lambda: loop.call_soon_threadsafe(
            lambda: emit("speak_done", seconds=len(samples) / RATE, wall_seconds=time.time() - t0)))

    async def play(self, cmd):
        client = cmd["client"]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.watch(pc, "play:%s" % client)
        only_codec(pc.addTransceiver("audio", direction="recvonly"), cmd.get("codec"))
        if cmd.get("video"):
            pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track):
            if track.kind == "audio":
                asyncio.ensure_future(self.consume(client, track))

        await pc.setLocalDescription(await pc.createOffer())
        sdp = loopback_only(pc.localDescription.sdp)
        reply = await self.request({"module": "meeting", "method": "play", "client": {"id": client}, "sdp": sdp})
        if reply.get("result") != 0:
            emit("play_failed", client=client, reply=reply)
            await pc.close()
            return
        await pc.setRemoteDescription(RTCSessionDescription(loopback_only(reply["sdp"]), "answer"))
        self.plays[client] = pc
        emit("playing", client=client, sdp_answer=reply["sdp"])

    async def consume(self, client, track):
        first = True
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if first:
                emit("track", client=client)
                first = False
            rec = self.recording
            if rec is None:
                continue
            pcm = frame.to_ndarray().reshape(-1)
            if len(frame.layout.channels) == 2:
                pcm = ((pcm[0::2].astype(np.int32) + pcm[1::2].astype(np.int32)) // 2).astype(np.int16)
            rec.append((client, frame.pts, pcm, frame.sample_rate))

    def record_stop(self, cmd):
        rec, self.recording = self.recording or [], None
        steps = {}
        odd = []
        last = {}
        chunks = []
        pos = 0
        rate = rec[0][3] if rec else RATE
        for client, pts, pcm, _ in rec:
            if client in last and pts is not None:
                step = pts - last[client]
                steps[str(step)] = steps.get(str(step), 0) + 1
                if step != len(pcm) and len(odd) < 20:
                    odd.append(step)
                # Keep pauses the sender's timeline shows (up to 10 s), as silence.
                gap = step - len(pcm)
                if 0 < gap <= 10 * rate:
                    chunks.append(np.zeros(gap, dtype=np.int16))
                    pos += gap
            last[client] = pts
            chunks.append(pcm)
            pos += len(pcm)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        if rate != RATE and len(audio):
            audio = resample(audio, rate)
        with wave.open(cmd["wav"], "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(audio.tobytes())
        emit("recorded", wav=cmd["wav"], seconds=len(audio) / RATE, frames=len(rec), rate=rate, pts_steps=steps,
             pts_odd=odd,
             rms=float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0)

    async def command(self, cmd):
        c = cmd.get("cmd")
        if c == "send":
            await self.ws.send(json.dumps(cmd["msg"]))
        elif c == "raw":
            await self.ws.send(cmd["text"])
        elif c == "publish":
            await self.publish(cmd)
        elif c == "speak":
            await self.speak(cmd)
        elif c == "play":
            await self.play(cmd)
        elif c == "record_start":
            self.recording = []
            emit("ack", cmd=c)
        elif c == "record_stop":
            self.record_stop(cmd)
        elif c == "close":
            for pc in [self.publish_pc, *self.plays.values()]:
                if pc is not None:
                    await pc.close()
            self.plays = {}
            self.publish_pc = None
            emit("ack", cmd=c)
        elif c == "quit":
            return False
        else:
            emit("error", message="unknown command %r" % c)
        return True


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="bridge base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--account", required=True)
    ap.add_argument("--ca", help="PEM CA file to check an https:// server's certificate with")
    ap.add_argument("--app-id", default="test")
    ap.add_argument("--secret", default="test")
    args = ap.parse_args()
    p = Participant(args)
    try:
        await p.login()
    except Exception as e:  # noqa: BLE001 - report any failure to the driver
        emit("error", message="login failed: %s" % e)
        sys.exit(1)
    loop = asyncio.get_event_loop()
    # Command lines carry whole frames (up to the server's 256 KiB limit and beyond, for tests).
    reader = asyncio.StreamReader(limit=4 * 2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            cmd = json.loads(line)
        except ValueError:
            emit("error", message="bad command line")
            continue
        try:
            if not await p.command(cmd):
                break
        except Exception as e:  # noqa: BLE001
            emit("error", message="%s failed: %r" % (cmd.get("cmd"), e))
    for pc in [p.publish_pc, *p.plays.values()]:
        if pc is not None:
            await pc.close()
    await p.ws.close()


if __name__ == "__main__":
    asyncio.run(main())
