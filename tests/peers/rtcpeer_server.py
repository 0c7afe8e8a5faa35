#!/usr/bin/env python3
"""A spec-strict 527meeting RTCPeer server for testing pttbridge's client mode.

Written from the spec (shared/seeds/527meeting-rtcpeer-api.md) alone, with its own message
shapes, not the bridge's: the login (6.1 getSign, 6.2 dockingLogin with its one `params` field),
the socket's `module`/`method` frames (5.x), the call events (4.1-4.8) and the meeting methods
and events (3.x). It answers only the requests whose spec section gives return values
(doRegister 5.6.3, enter 3.1.3, exit 3.2.3, finish 3.3.3, publish 3.4.3, play 3.5.3, logout
5.11.3) and never replies to the rest (doEvent, doAgree, reject, cancel, chat, privateChat,
closePlay, ...). Anything the spec does not allow is reported as a "violation" event (and a
request that has a reply gets `result` 1).

Where the spec leaves media to its own media server, it uses the bridge's documented `sdp`
extension (docs/rtcpeer.md): `meeting.publish`/`meeting.play` carry the client's SDP offer and
the reply its answer. The media side is aiortc (PyPI).

The server itself plays the caller: a user (CALLER_ID, "Dispatcher", device "pc") who is not on
a socket but in the server, with its own room and an aiortc audio track.

The WebSocket path is /rtcpeer (the spec names none; the bridge's contract does).

  stdout: one JSON object per line, always with an "event" key:
    {"event":"ready","port":N}
    {"event":"http","path":..,"fields":{..}}          each login request, as received
    {"event":"ws_in","msg":{..}}                       every frame a client sent
    {"event":"ws_out","msg":{..}}                      every frame the server sent
    {"event":"registered","userId":N,"deviceType":..,"live":K}
                                                       K: open sockets registered as that user now
    {"event":"unregistered","userId":N,"live":K,"how":"logout"|"closed"}
                                                       a registered socket logged out or closed
    {"event":"violation","what":..,"msg":{..}}         something the spec does not allow
    {"event":"pc_state","pc":"publish"|"play","state":..}
    {"event":"track"}                                  the first audio frame of the client's publish
    {"event":"speak_done","seconds":..}
    {"event":"recorded","wav":..,"seconds":..,"frames":..,"rms":..}
  stdin commands (the caller's actions):
    {"cmd":"invite","to":N[,"type":1]}                  push doInvite (4.1.3: ownUserId, ownDeviceType, type)
    {"cmd":"connected","to":N,"roomId":R,"roomType":T}  push doEvent onConnected (4.7)
    {"cmd":"publish_caller"}                           the caller publishes: onPublished event "play"
    {"cmd":"push","to":N,"msg":{..}}                   any push, as given
    {"cmd":"speak","wav":..}                           the caller speaks (48 kHz mono 16-bit WAV)
    {"cmd":"record_start"} / {"cmd":"record_stop","wav":..}   what the client publishes
    {"cmd":"quit"}
"""

import argparse
import asyncio
import json
import secrets
import ssl
import sys
import time
import wave

import numpy as np
from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

# The participant peer's helpers: loopback-only ICE (importing it patches aioice) and the
# real-time WAV track. Media helpers only: no message types are shared.
from meeting import RATE, WavTrack, loopback_only

CALLER_ID = 1
CALLER_NAME = "Dispatcher"
DEVICE_TYPES = {"pc", "Android", "iOS", "webphone", "tv"}  # 4.x / 5.x "设备类型"


def emit(event, **fields):
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def log(msg):
    sys.stderr.write("[rtcpeer_server] %s\n" % msg)
    sys.stderr.flush()


def is_id(v):
    return isinstance(v, int) and not isinstance(v, bool)


# Required fields of each client request (the spec's "是" rows) and their checks; `reply` says
# whether the spec gives return values (then the server answers).
def need(kind):
    return {
        "id": is_id,
        "str": lambda v: isinstance(v, str) and v != "",
        "bool": lambda v: isinstance(v, bool),
        "obj": lambda v: isinstance(v, dict),
    }[kind]


REQUESTS = {
    # 5.6.2
    ("call", "doRegister"): ({"SID": "str", "userId": "id"}, True),
    # 5.5.2 (4.8.2 marks targetDeviceType required too: checked below)
    ("call", "doEvent"): ({"ownUserId": "id", "targetUserId": "id", "event": "str"}, False),
    # 5.2.2 lists roomId, "got from the call" -- a 4.1 invite gives the callee none, and the
    # JS agree of 4.2 sends none: not required here.
    ("call", "doAgree"): ({"ownUserId": "id", "targetUserId": "id"}, False),
    ("call", "reject"): ({"ownUserId": "id", "targetUserId": "id"}, False),  # 5.3.2
    ("call", "cancel"): ({"ownUserId": "id", "targetUserId": "id"}, False),  # 5.4.2
    ("account", "logout"): ({"SID": "str", "userId": "id"}, True),  # 5.11.2
    ("meeting", "enter"): ({"userId": "id", "roomId": "id", "roomType": "id"}, True),  # 3.1.2
    ("meeting", "exit"): ({}, True),  # 3.2
    ("meeting", "finish"): ({}, True),  # 3.3
    # 3.4.2 + the sdp extension
    ("meeting", "publish"): ({"audio": "bool", "video": "bool", "sdp": "str"}, True),
    ("meeting", "play"): ({"client": "obj", "sdp": "str"}, True),  # 3.5.2 + sdp
    ("meeting", "closePlay"): ({"client": "obj"}, False),  # 3.6.2
    ("meeting", "updateMute"): ({"isMute": "bool"}, False),  # 3.8.2
    ("meeting", "muteMsg"): ({"userId": "id", "roomId": "id", "isMute": "bool"}, False),  # 3.9.2
    ("meeting", "muteAll"): ({"userId": "id", "roomId": "id", "isMute": "bool"}, False),  # 3.10.2
    ("meeting", "kickOut"): ({"userId": "id", "roomId": "id"}, False),  # 3.11.2
    ("meeting", "chat"): ({"userId": "id", "roomId": "id", "content": "str"}, False),  # 3.26.2
    ("meeting", "privateChat"): (
        {"userId": "id", "otherUserId": "id", "roomId": "id", "content": "str"}, False),  # 3.27.2
}
CALL_EVENTS = {"onRinging", "onBusy", "onConnected"}  # 4.8 / 5.5


class Server:
    def __init__(self, args):
        self.args = args
        self.signs = set()
        self.users = {}  # account -> user
        self.sids = {}  # SID -> user id
        self.next_id = 2001
        self.sockets = {}  # user id -> ws
        self.live = {}  # user id -> registered sockets not yet logged out or closed
        self.rooms = {}  # room id -> {"roomType":..}
        self.where = {}  # user id -> room id
        self.caller_publishing = False
        self.caller_track = WavTrack()
        self.pcs = []
        self.recording = None
        self.first_track = True

    def violation(self, what, msg=None):
        emit("violation", what=what, msg=msg)
        log("VIOLATION: %s %s" % (what, json.dumps(msg)[:300] if msg is not None else ""))

    # ---- 6.1 getSign ----
    async def get_sign(self, request):
        q = request.query
        emit("http", path="/app/getSign", fields=dict(q))
        if q.get("appId") != self.args.app_id or q.get("secret") != self.args.secret:
            return web.json_response({"code": 401, "data": None, "message": "bad appId or secret"})
        sign = secrets.token_hex(16)
        self.signs.add(sign)
        return web.json_response({"code": 200, "data": sign, "message": "success"})

    # ---- 6.2 dockingLogin: one `params` field holding the JSON (6.2.2.4) ----
    async def account(self, request):
        form = await request.post()
        fields = dict(form)
        emit("http", path="/app/account", fields=fields)

        def answer(result, **more):
            return web.json_response({"result": result, "method": "dockingLogin", "module": "account", **more})

        if set(fields) != {"params"}:
            self.violation("dockingLogin must post one field `params` (6.2.2.4)", fields)
            return answer(4)
        try:
            params = json.loads(fields["params"])
        except ValueError:
            self.violation("dockingLogin params is not JSON", fields)
            return answer(4)
        if params.get("method") != "dockingLogin":
            self.violation("params.method must be dockingLogin", params)
            return answer(4)
        if params.get("appkey") != self.args.app_id:
            self.violation("params.appkey is not the company's access key", params)
            return answer(2)
        if params.get("sign") not in self.signs:
            self.violation("params.sign is not a sign from getSign", params)
            return answer(2)
        account = params.get("account")
        if not isinstance(account, str) or not account:
            self.violation("params.account is required", params)
            return answer(4)
        user = self.users.get(account)
        if user is None:
            user = {"id": self.next_id, "account": account, "name": params.get("userName") or account,
                    "email": None, "phone": None, "photo": params.get("avatar"), "company": "Test"}
            self.next_id += 1
            self.users[account] = user
        sid = secrets.token_hex(12)
        self.sids[sid] = user["id"]
        return answer(0, SID=sid, user=user,
                      organisation={"id": 2, "name": "Test", "email": None, "phone": None, "logo": None,
                                    "address": None})

    # ---- the socket ----
    async def socket(self, request):
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = {"ws": ws, "user": None}
        try:
            async for m in ws:
                if m.type != WSMsgType.TEXT:
                    continue
                try:
                    msg = json.loads(m.data)
                except ValueError:
                    self.violation("frame is not JSON", m.data[:200])
                    continue
                emit("ws_in", msg=msg)
                try:
                    await self.on_request(conn, msg)
                except Exception as e:  # noqa: BLE001
                    log("request failed: %r" % e)
                    emit("error", message="%s failed: %r" % (msg.get("method"), e))
        finally:
            self.unregister(conn, "closed")
        return ws

    def unregister(self, conn, how):
        user = conn["user"]
        if user is None:
            return
        conn["user"] = None
        if self.sockets.get(user) is conn["ws"]:
            del self.sockets[user]
        live = self.live.setdefault(user, set())
        live.discard(id(conn["ws"]))
        emit("unregistered", userId=user, live=len(live), how=how)

    async def send(self, ws, msg):
        emit("ws_out", msg=msg)
        await ws.send_str(json.dumps(msg))

    async def push(self, to, msg):
        ws = self.sockets.get(to)
        if ws is None:
            emit("error", message="user %s is not registered" % to)
            return
        await self.send(ws, msg)

    def client(self, user_id):
        if user_id == CALLER_ID:
            return {"id": CALLER_ID, "name": CALLER_NAME, "mode": "pc", "streamId": CALLER_ID,
                    "isMuted": False, "isSuperModerator": True}
        name = next((u["name"] for u in self.users.values() if u["id"] == user_id), str(user_id))
        return {"id": user_id, "name": name, "mode": "pc", "streamId": user_id, "isMuted": False,
                "isSuperModerator": False}

    async def on_request(self, conn, msg):
        ws = conn["ws"]
        module, method = msg.get("module"), msg.get("method")
        key = (module, method)
        if key not in REQUESTS:
            self.violation("unknown request %s.%s" % (module, method), msg)
            return
        required, has_reply = REQUESTS[key]
        missing = [f for f, kind in required.items() if f not in msg or not need(kind)(msg[f])]

        async def reply(result, **fields):
            if has_reply:
                await self.send(ws, {"module": module, "method": method, "result": result, **fields})

        if missing:
            self.violation("%s.%s: required field(s) missing or mistyped: %s" % (module, method, missing), msg)
            await reply(1)
            return
        for f in ("deviceType", "ownDeviceType", "targetDeviceType"):
            if f in msg and msg[f] not in DEVICE_TYPES:
                self.violation("%s %r is not one of the spec's device types" % (f, msg[f]), msg)
        if "result" in msg:
            self.violation("a request carries `result`", msg)
        if key == ("call", "doRegister"):
            if self.sids.get(msg["SID"]) != msg["userId"]:
                self.violation("doRegister: SID is not that user's", msg)
                await reply(1)
                return
            conn["user"] = msg["userId"]
            self.sockets[msg["userId"]] = ws
            live = self.live.setdefault(msg["userId"], set())
            live.add(id(ws))
            await reply(0)
            emit("registered", userId=msg["userId"], deviceType=msg.get("deviceType"), live=len(live))
            return
        me = conn["user"]
        if me is None:
            self.violation("a request before doRegister", msg)
            await reply(1)
            return
        if key == ("account", "logout"):
            # 5.11: the session ends; the socket is no longer that user's.
            if self.sids.get(msg["SID"]) != me or msg["userId"] != me:
                self.violation("logout: SID or userId is not the registered user's", msg)
                await reply(1)
                return
            await reply(0)
            self.where.pop(me, None)
            self.unregister(conn, "logout")
            return
        if module == "call":
            if msg["ownUserId"] != me:
                self.violation("ownUserId is not the registered user", msg)
            if msg["targetUserId"] != CALLER_ID:
                self.violation("call request to someone who did not call", msg)
            if method == "doEvent":
                if msg["event"] not in CALL_EVENTS:
                    self.violation("doEvent event %r is not one of the spec's" % msg["event"], msg)
                if "targetDeviceType" not in msg:
                    self.violation("doEvent: targetDeviceType is required (4.8.2)", msg)
            emit("call_step", method=method, msg=msg)
            return
        if key == ("meeting", "enter"):
            room = self.rooms.get(msg["roomId"])
            if msg["userId"] != me:
                self.violation("enter: userId is not the registered user", msg)
            if room is None:
                self.violation("enter: no such room", msg)
                await reply(1)
                return
            if msg["roomType"] != room["roomType"]:
                self.violation("enter: roomType %r is not the room's (%r, from onConnected)"
                               % (msg["roomType"], room["roomType"]), msg)
                await reply(1)
                return
            self.where[me] = msg["roomId"]
            await reply(0, client=self.client(me), members=[self.client(CALLER_ID)],
                        room={"id": msg["roomId"], "name": "即时会议", "ownerId": CALLER_ID,
                              "roomType": room["roomType"], "numberLimit": 10, "isPublic": False,
                              "isHasPwd": False})
            emit("entered", userId=me, roomId=msg["roomId"], roomType=msg["roomType"])
            return
        room = self.where.get(me)
        if room is None:
            self.violation("%s.%s outside a room" % (module, method), msg)
            await reply(1)
            return
        if method in ("chat", "privateChat", "muteMsg", "muteAll", "kickOut") and msg["roomId"] != room:
            self.violation("%s: roomId is not the room the user is in" % method, msg)
        if method in ("chat", "privateChat") and msg["userId"] != me:
            self.violation("%s: userId is not the sender's client id" % method, msg)
        if method == "exit":
            self.where.pop(me, None)
            await reply(0)
            emit("exited", userId=me)
        elif method == "finish":
            self.where.pop(me, None)
            await reply(0)
        elif method == "publish":
            answer = await self.answer_publish(msg["sdp"])
            await reply(0, client=self.client(me), sdp=answer)
        elif method == "play":
            target = msg["client"].get("id")
            if target != CALLER_ID or not self.caller_publishing:
                await reply(1, message="not publishing")
                return
            answer = await self.answer_play(msg["sdp"])
            await reply(0, client=self.client(CALLER_ID), sdp=answer)
        else:
            emit(method, msg=msg)

    # ---- media (the sdp extension) ----
    def watch(self, pc, name):
        @pc.on("connectionstatechange")
        async def on_state():
            emit("pc_state", pc=name, state=pc.connectionState)

    async def answer_publish(self, offer):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        self.watch(pc, "publish")

        @pc.on("track")
        def on_track(track):
            if track.kind == "audio":
                asyncio.ensure_future(self.consume(track))

        await pc.setRemoteDescription(RTCSessionDescription(loopback_only(offer), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return loopback_only(pc.localDescription.sdp)

    async def answer_play(self, offer):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        self.watch(pc, "play")
        await pc.setRemoteDescription(RTCSessionDescription(loopback_only(offer), "offer"))
        # The offer's recvonly audio m-line takes the caller's track: the answer is sendonly.
        pc.addTrack(self.caller_track)
        await pc.setLocalDescription(await pc.createAnswer())
        return loopback_only(pc.localDescription.sdp)

    async def consume(self, track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if self.first_track:
                emit("track")
                self.first_track = False
            if self.recording is None:
                continue
            pcm = frame.to_ndarray().reshape(-1)
            if len(frame.layout.channels) == 2:
                pcm = ((pcm[0::2].astype(np.int32) + pcm[1::2].astype(np.int32)) // 2).astype(np.int16)
            self.recording.append((frame.pts, pcm))

    def record_stop(self, path):
        rec, self.recording = self.recording or [], None
        chunks, last = [], None
        for pts, pcm in rec:
            if last is not None and pts is not None:
                gap = pts - last - len(pcm)
                if 0 < gap <= 10 * RATE:  # pauses on the sender's timeline, as silence
                    chunks.append(np.zeros(gap, dtype=np.int16))
            last = pts
            chunks.append(pcm)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        with wave.open(path, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(audio.tobytes())
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0
        emit("recorded", wav=path, seconds=len(audio) / RATE, frames=len(rec), rms=rms)

    # ---- the caller's actions ----
    async def command(self, cmd):
        c = cmd.get("cmd")
        if c == "invite":
            # 4.1.3 / 5.1.3 event data: ownUserId, ownDeviceType, type. No roomId.
            await self.push(cmd["to"], {"module": "call", "method": "doInvite", "ownUserId": CALLER_ID,
                                        "ownDeviceType": "pc", "type": cmd.get("type", 1)})
        elif c == "connected":
            # 4.7: the caller entered the room and tells the callee which (roomId, roomType).
            self.rooms[cmd["roomId"]] = {"roomType": cmd["roomType"]}
            await self.push(cmd["to"], {"module": "call", "method": "doEvent", "ownUserId": CALLER_ID,
                                        "ownDeviceType": "pc", "event": "onConnected",
                                        "roomId": cmd["roomId"], "roomType": cmd["roomType"]})
        elif c == "publish_caller":
            self.caller_publishing = True
            for user, room in list(self.where.items()):
                # 3.23.3: event "play", client: who did it (plus roomId, as 3.x's handlers read).
                await self.push(user, {"module": "meeting", "method": "onPublished", "roomId": room,
                                       "client": self.client(CALLER_ID), "event": "play"})
        elif c == "push":
            await self.push(cmd["to"], cmd["msg"])
        elif c == "speak":
            with wave.open(cmd["wav"], "rb") as w:
                samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
            t0 = time.time()
            loop = asyncio.get_event_loop()
            self.caller_track.speak(samples, lambda: loop.call_soon_threadsafe(
                lambda: emit("speak_done", seconds=len(samples) / RATE, wall_seconds=time.time() - t0)))
        elif c == "record_start":
            self.recording = []
            emit("ack", cmd=c)
        elif c == "record_stop":
            self.record_stop(cmd["wav"])
        elif c == "quit":
            return False
        else:
            emit("error", message="unknown command %r" % c)
        return True


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True, help="PEM certificate chain")
    ap.add_argument("--key", required=True, help="PEM private key")
    ap.add_argument("--app-id", default="test")
    ap.add_argument("--secret", default="test")
    args = ap.parse_args()
    srv = Server(args)
    app = web.Application()
    app.router.add_get("/app/getSign", srv.get_sign)
    app.router.add_post("/app/account", srv.account)
    app.router.add_get("/rtcpeer", srv.socket)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=ctx).start()
    emit("ready", port=args.port)
    loop = asyncio.get_event_loop()
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
            if not await srv.command(cmd):
                break
        except Exception as e:  # noqa: BLE001
            emit("error", message="%s failed: %r" % (cmd.get("cmd"), e))
    for pc in srv.pcs:
        await pc.close()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
