#!/usr/bin/env python3
"""A spec-strict Totalk organisation-admin server (`/ent/`) for testing pttbridge's directory.

Written from the seed (shared/seeds/totalk-ptt-sdk-and-admin-api.md, section 5) alone, with its
own structures, not the bridge's: every call is POST to /ent/?method=NAME with
application/x-www-form-urlencoded fields (5.1 note 1, 5.3.1); `login` (5.3.1.1) gives a token
that every other call carries as the `token` field and that times out (406, "1 hour" in the
seed, --token-ttl here); the return codes are those of 5.1.2. It answers login,
getUsersInPage (5.3.2.5), getUsersTotal (5.3.2.4), getUserProperty (5.3.2.7),
getChannelsInPage (5.3.3.4), getMembersTotal (5.3.4.3), getMemberRole (5.3.4.5),
pushNotice (5.3.1.5) and getMessagesInPage (5.3.5.3), in the shapes of the seed's examples.

Anything the seed does not allow is answered with its code AND reported as a "violation"
event, so a test can assert there were none: another HTTP method (401), another path (401), no
or an unknown `method` (401), another Content-Type, a missing required parameter (402), a
parameter the method's table does not list, a value of the wrong form (403), a bad or
expired token (405/406), `encrypt=1` (the test server holds no RSA key).

With --cert/--key it serves HTTPS.

Its data comes from a JSON file the test writes (re-read on "reload"):
    {"account": "10000", "password": "...",
     "users":    [{"uid": 1001001, "name": "alice", "nick": "Alice", "role": 1, "cid": -1}, ...],
     "channels": [{"cid": 1001, "name": "North", "members": {"1001001": 2, "1001002": 0}}, ...],
     "messages": {"1001": [{"chan_seq_id": 1, "from_id": 1001001, "time": 1700000000000,
                            "type": 0, "content": "hi"}, ...]}}
(`members` maps a user id to the member's role: 0 ordinary, 1 deputy, 2 admin.)

  stdout: one JSON object per line, always with an "event" key:
    {"event":"ready","port":N}
    {"event":"request","method":..,"fields":{..}}   every call (password and token left out)
    {"event":"violation","what":..}
    {"event":"notice","fields":{..}}                 a pushNotice accepted
    {"event":"stopped"} / {"event":"started"}
    {"event":"violations","list":[..]}               answer to {"cmd":"violations"}
    {"event":"ack","cmd":..}
  stdin commands:
    {"cmd":"stop"} / {"cmd":"start"}     stop listening (the admin API down) / listen again
    {"cmd":"reload"}                     re-read the data file
    {"cmd":"expire_tokens"}              every token issued so far times out (406)
    {"cmd":"misbehave","how":"garbage"|"error"|"huge"|"flood"|null}
                                         answer every call after login with a body that is not
                                         JSON, with code 500, with a page three times larger
                                         than asked for, or fifty times (megabytes); null:
                                         behave again
    {"cmd":"violations"}
    {"cmd":"quit"}
"""

import argparse
import asyncio
import json
import re
import secrets
import ssl
import sys
import time

from aiohttp import web

FORM = "application/x-www-form-urlencoded"

# Each method's parameter table: name -> required. Every one but login needs the token.
TABLES = {
    "login": {"account": True, "encrypt": False, "password": True},
    "getUsersTotal": {"token": True},
    "getUsersInPage": {"pageIndex": True, "pageSize": True, "filter": False, "keyword": False,
                       "token": True},
    "getUserProperty": {"uid": True, "key": True, "token": True},
    "getChannelsInPage": {"pageIndex": True, "pageSize": True, "keyword": False, "token": True},
    "getMembersTotal": {"cid": True, "token": True},
    "getMemberRole": {"token": True, "cid": True, "uid": True},
    "pushNotice": {"targetType": True, "targetId": True, "content": True, "ttsPlay": True,
                   "token": True},
    "getMessagesInPage": {"pageIndex": True, "pageSize": True, "cid": True, "sort": False,
                          "token": True},
}
# getUserProperty keys (5.3.2.7).
USER_KEYS = {"name", "nick", "uid", "cid", "device", "lastLogin", "regTime", "timeout",
             "joined_channels", "cardType", "ban", "role"}
INT = re.compile(r"^-?[0-9]+$")


def emit(event, **fields):
    sys.stdout.write(json.dumps({"event": event, **fields}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def log(msg):
    sys.stderr.write("[admin_server] %s\n" % msg)
    sys.stderr.flush()


class Refused(Exception):
    """A request the seed does not allow: its code and reason."""

    def __init__(self, code, reason, violation=True):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.violation = violation


class AdminServer:
    def __init__(self, args):
        self.args = args
        self.tokens = {}  # token -> expiry (monotonic seconds)
        self.violations = []
        self.misbehave = None
        self.runner = None
        self.load()

    def load(self):
        with open(self.args.data, encoding="utf-8") as f:
            d = json.load(f)
        self.account = str(d["account"])
        self.password = str(d["password"])
        self.users = [dict(u) for u in d.get("users", [])]
        self.channels = [dict(c) for c in d.get("channels", [])]
        self.messages = {str(k): v for k, v in d.get("messages", {}).items()}

    def violation(self, what):
        self.violations.append(what)
        emit("violation", what=what)

    # --- HTTP ---------------------------------------------------------------------------------

    async def handle(self, request):
        try:
            method, fields = await self.check(request)
            body = self.answer(method, fields)
        except Refused as r:
            if r.violation:
                self.violation(r.reason)
            body = {"code": r.code, "reason": r.reason}
        if isinstance(body, (bytes, str)):
            return web.Response(body=body, content_type="text/html")
        return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False))

    async def check(self, request):
        if request.method != "POST":
            raise Refused(401, "url error: only support POST")
        if request.path != "/ent/":
            raise Refused(401, "url error: path")
        method = request.query.get("method")
        if not method:
            raise Refused(401, "url error: missed method")
        if method not in TABLES:
            raise Refused(401, "url error: api name")
        if request.content_type != FORM:
            self.violation("%s: Content-Type %r, not %s" % (method, request.content_type, FORM))
        post = await request.post()
        fields = {}
        for k in post.keys():
            vals = post.getall(k)
            if len(vals) != 1:
                self.violation("%s: parameter %s given %d times" % (method, k, len(vals)))
            fields[k] = vals[0]
        shown = {k: v for k, v in fields.items() if k not in ("password", "token")}
        emit("request", method=method, fields=shown)
        table = TABLES[method]
        for name, required in table.items():
            if required and name not in fields:
                raise Refused(402, "parameter missed: %s" % name)
        for name in fields:
            if name not in table:
                self.violation("%s: parameter %s is not in its table" % (method, name))
        if method != "login":
            expiry = self.tokens.get(fields["token"])
            if expiry is None:
                raise Refused(405, "token invalid")
            if time.monotonic() >= expiry:
                # A timed-out token is the client's to renew, not its fault.
                raise Refused(406, "token timeout", violation=False)
        for name in ("pageIndex", "pageSize", "cid", "uid", "targetType", "targetId", "ttsPlay",
                     "encrypt"):
            if name in fields and not INT.match(fields[name]):
                raise Refused(403, "parameter error: %s" % name)
        if "pageSize" in fields and int(fields["pageSize"]) < 1:
            raise Refused(403, "parameter error: pageSize")
        if "pageIndex" in fields and int(fields["pageIndex"]) < 0:
            raise Refused(403, "parameter error: pageIndex")
        return method, fields

    def answer(self, method, f):
        if method == "login":
            if f.get("encrypt", "0") != "0":
                raise Refused(403, "parameter error: encrypt")
            if f["account"] != self.account or f["password"] != self.password:
                raise Refused(404, "login failed", violation=False)
            token = secrets.token_urlsafe(24)
            self.tokens[token] = time.monotonic() + self.args.token_ttl
            return {"code": 200, "reason": "success", "token": token}
        if self.misbehave == "garbage":
            return "<html><body>502 Bad Gateway</body></html>"
        if self.misbehave == "error":
            raise Refused(500, "operation error", violation=False)
        if method == "getUsersTotal":
            return {"code": 200, "reason": "success", "data": len(self.users)}
        if method == "getUsersInPage":
            rows = [self.user_row(u) for u in self.users]
            return self.page(rows, f)
        if method == "getUserProperty":
            user = self.user(f["uid"])
            if f["key"] not in USER_KEYS:
                raise Refused(403, "parameter error: key")
            row = self.user_row(user)
            row["joined_channels"] = row.pop("joinedChannels", "")
            return {"code": 200, "reason": "success", "value": str(row[f["key"]])}
        if method == "getChannelsInPage":
            rows = [{"cid": c["cid"], "memberNum": len(c.get("members", {})), "name": c["name"]}
                    for c in self.channels]
            return self.page(rows, f)
        if method == "getMembersTotal":
            return {"code": 200, "reason": "success",
                    "data": len(self.channel(f["cid"]).get("members", {}))}
        if method == "getMemberRole":
            members = self.channel(f["cid"]).get("members", {})
            if f["uid"] not in members:
                raise Refused(403, "parameter error: uid", violation=False)
            return {"code": 200, "reason": "success", "data": int(members[f["uid"]])}
        if method == "pushNotice":
            kind = int(f["targetType"])
            if kind not in (0, 1, 2, 3):
                raise Refused(403, "parameter error: targetType")
            if kind in (1, 3):
                self.channel(f["targetId"])
            elif kind == 2:
                self.user(f["targetId"])
            if f["ttsPlay"] not in ("0", "1"):
                raise Refused(403, "parameter error: ttsPlay")
            # 1000 Chinese characters or 2000 characters (5.3.1.5).
            if not f["content"] or len(f["content"]) > 2000:
                raise Refused(403, "parameter error: content")
            emit("notice", fields={k: v for k, v in f.items() if k != "token"})
            return {"code": 200, "reason": "success"}
        if method == "getMessagesInPage":
            self.channel(f["cid"])
            sort = f.get("sort", "down")
            if sort not in ("down", "up"):
                raise Refused(403, "parameter error: sort")
            rows = []
            for m in self.messages.get(f["cid"].strip(), []):
                rows.append({"cid": int(f["cid"]), "chan_seq_id": m["chan_seq_id"],
                             "from_id": m["from_id"], "time": m["time"], "type": m["type"],
                             "content": m.get("content", ""), "orig_name": m.get("orig_name", ""),
                             "size": m.get("size", 0), "duration": m.get("duration", 0)})
            rows.sort(key=lambda m: m["time"], reverse=(sort == "down"))
            return self.page(rows, f)
        raise Refused(401, "url error: api name")

    def page(self, rows, f):
        index, size = int(f["pageIndex"]), int(f["pageSize"])
        if self.misbehave in ("huge", "flood"):
            # More than asked for, and a total to match; "flood": answers of megabytes.
            n = size * (50 if self.misbehave == "flood" else 3)
            rows = [dict(rows[0] if rows else {}, uid=9_000_000 + i) for i in range(n)]
            return {"code": 200, "reason": "success", "total": 10_000_000, "data": rows}
        return {"code": 200, "reason": "success", "total": len(rows),
                "data": rows[index * size:(index + 1) * size]}

    def user(self, uid):
        for u in self.users:
            if str(u["uid"]) == uid.strip():
                return u
        raise Refused(403, "parameter error: uid", violation=False)

    def channel(self, cid):
        for c in self.channels:
            if str(c["cid"]) == cid.strip():
                return c
        raise Refused(403, "parameter error: cid", violation=False)

    def user_row(self, u):
        joined = "".join("%s(%s);" % (c["name"], c["cid"]) for c in self.channels
                         if str(u["uid"]) in c.get("members", {}))
        row = {"ban": u.get("ban", 0), "cardType": u.get("cardType", "perm"),
               "cid": u.get("cid", -1), "device": u.get("device", ""),
               "lastLogin": u.get("lastLogin", ""), "name": u["name"],
               "nick": u.get("nick", u["name"]), "regTime": u.get("regTime", "2021-06-27 10:05:15"),
               "role": u.get("role", 0), "timeout": u.get("timeout", ""), "uid": u["uid"]}
        if joined:
            row["joinedChannels"] = joined
        return row

    # --- control --------------------------------------------------------------------------------

    async def start(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        ctx = None
        if self.args.cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.args.cert, self.args.key)
        site = web.TCPSite(self.runner, "127.0.0.1", self.args.port, reuse_address=True,
                           ssl_context=ctx)
        await site.start()

    async def stop(self):
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def command(self, cmd):
        c = cmd.get("cmd")
        if c == "stop":
            await self.stop()
            emit("stopped")
        elif c == "start":
            await self.start()
            emit("started")
        elif c == "reload":
            self.load()
            emit("ack", cmd=c)
        elif c == "expire_tokens":
            self.tokens = {t: 0 for t in self.tokens}
            emit("ack", cmd=c)
        elif c == "misbehave":
            self.misbehave = cmd.get("how")
            emit("ack", cmd=c)
        elif c == "violations":
            emit("violations", list=self.violations)
        elif c == "quit":
            return False
        else:
            log("unknown command %r" % cmd)
        return True


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--token-ttl", type=float, default=3600.0)
    ap.add_argument("--cert", help="PEM certificate chain: serve HTTPS")
    ap.add_argument("--key", help="its PEM private key")
    args = ap.parse_args()
    server = AdminServer(args)
    await server.start()
    emit("ready", port=args.port)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            cmd = json.loads(line)
        except ValueError:
            log("not JSON: %r" % line)
            continue
        if not await server.command(cmd):
            break
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
