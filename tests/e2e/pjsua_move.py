#!/usr/bin/env python3
"""Move (*75, RFC 3891 Replaces) with real PJSIP user agents (pjsua2-python), driven by
tests/e2e/features.rs against a running sipfork.

Three PJSIP accounts in one process, each on its own UDP transport (so sipfork sees three
devices): the caller (extension 1001), device A and device B (both extension 1000). The caller
calls 1000; A answers (B's copy of that INVITE is refused 482 Loop Detected by PJSIP itself: the
three accounts share one endpoint, which recognizes its own request). Then B dials *75: sipfork sends
the caller an INVITE with Replaces; PJSIP accepts it, answers B and sends A its BYE. Last, A dials
*74: PJSIP supports no Join (RFC 3911), so sipfork answers 420.

Then a call A *places*: A calls 1001 (the caller's account answers). With two shards that call is
held on 1001's shard while 1000's lines are on 1000's shard (recorded there by a core-to-core
note); B dials *75 again, sipfork sends 1001's PJSIP an INVITE with Replaces naming that dialog,
PJSIP accepts it and sends A its BYE, and the device overview shows B in the call.

Usage: pjsua_move.py PROXY_HOST:PORT ADMIN_HOST:PORT
Prints one JSON line with what happened; exits 0 when every check held, 1 otherwise.
"""

import json
import os
import sys
import time
import urllib.request

import pjsua2 as pj

PROXY, ADMIN = sys.argv[1], sys.argv[2]
events = []


def log(*what):
    events.append(" ".join(str(w) for w in what))


class Call(pj.Call):
    def __init__(self, acc, name, call_id=pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.acc, self.name = acc, name
        self.state = None
        self.status = None
        self.media_active = False

    def onCallState(self, prm):
        ci = self.getInfo()
        self.state, self.status = ci.stateText, ci.lastStatusCode
        log(self.name, "state", ci.stateText, ci.lastStatusCode, ci.lastReason)

    def onCallMediaState(self, prm):
        ci = self.getInfo()
        self.media_active = any(
            m.status == pj.PJSUA_CALL_MEDIA_ACTIVE for m in ci.media
        )

    def onCallReplaced(self, prm):
        # The caller's old call (with A) is being replaced by the INVITE from B.
        new = Call(self.acc, self.acc.name + "-replacing", prm.newCallId)
        self.acc.calls.append(new)
        prm.newCall = new
        log(self.name, "replaced by call", prm.newCallId)


class Account(pj.Account):
    def __init__(self, name, answer):
        super().__init__()
        self.name, self.answer = name, answer
        self.calls = []
        self.reg = None

    def onRegState(self, prm):
        self.reg = prm.code

    def onIncomingCall(self, prm):
        c = Call(self, f"{self.name}-in", prm.callId)
        self.calls.append(c)
        op = pj.CallOpParam()
        op.statusCode = 200 if self.answer else 180
        c.answer(op)


def main():
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    ep.libInit(cfg)
    tids = {}
    for name in ("caller", "A", "B"):
        tc = pj.TransportConfig()
        tc.port = 0
        tc.boundAddress = "127.0.0.1"
        tc.publicAddress = "127.0.0.1"
        tids[name] = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
    ep.libStart()
    ep.audDevManager().setNullDev()
    ports = {n: ep.transportGetInfo(t).localName.split(":")[-1] for n, t in tids.items()}

    def account(name, user, answer):
        ac = pj.AccountConfig()
        ac.idUri = f"sip:{user}@{PROXY}"
        ac.regConfig.registrarUri = f"sip:{PROXY}"
        ac.sipConfig.transportId = tids[name]
        # RTP on loopback too (any free port from 4000 up).
        ac.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        ac.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, f"pw-{user}"))
        a = Account(name, answer)
        a.create(ac)
        return a

    caller = account("caller", "1001", True)
    a = account("A", "1000", True)
    b = account("B", "1000", False)

    def run_until(pred, secs):
        end = time.time() + secs
        while time.time() < end:
            ep.libHandleEvents(20)
            if pred():
                return True
        return False

    ok = run_until(lambda: all(x.reg == 200 for x in (caller, a, b)), 10)
    checks = {"registered": ok}

    first = Call(caller, "caller-out")
    caller.calls.append(first)
    first.makeCall(f"sip:1000@{PROXY}", pj.CallOpParam(True))
    checks["A answered"] = run_until(
        lambda: first.state == "CONFIRMED" and any(c.state == "CONFIRMED" for c in a.calls), 15
    )
    a_call = next((c for c in a.calls if c.state == "CONFIRMED"), None)
    # Let B's branch end.
    run_until(lambda: all(c.state == "DISCONNECTED" for c in b.calls), 5)

    t_move = time.time()
    mover = Call(b, "B-move")
    b.calls.append(mover)
    mover.makeCall(f"sip:*75@{PROXY}", pj.CallOpParam(True))
    checks["B connected to the caller"] = run_until(
        lambda: mover.state == "CONFIRMED"
        and any(c.name == "caller-replacing" and c.state == "CONFIRMED" for c in caller.calls),
        15,
    )
    checks["A got its BYE"] = run_until(
        lambda: a_call is not None and a_call.state == "DISCONNECTED", 10
    )
    a_bye_after = round(time.time() - t_move, 2)
    checks["caller's old call ended"] = first.state == "DISCONNECTED"
    run_until(lambda: False, 1)
    checks["media active caller-B"] = mover.media_active and any(
        c.name == "caller-replacing" and c.media_active for c in caller.calls
    )
    with urllib.request.urlopen(f"http://{ADMIN}/extensions/1000/devices", timeout=5) as r:
        devices = json.load(r)["devices"]
    in_call = [d["source"] for d in devices if d.get("in_call")]
    checks["devices: B in the call"] = in_call == [f"127.0.0.1:{ports['B']}"]

    # Join (*74) from A: neither PJSIP party of the call advertises `join` (RFC 3911), so sipfork
    # answers 420 Bad Extension with Unsupported: join.
    joiner = Call(a, "A-join")
    a.calls.append(joiner)
    joiner.makeCall(f"sip:*74@{PROXY}", pj.CallOpParam(True))
    run_until(lambda: joiner.state == "DISCONNECTED", 10)
    checks["join refused with 420 (no party supports join)"] = joiner.status == 420

    def hang_up_all():
        for c in caller.calls + a.calls + b.calls:
            if c.state not in (None, "DISCONNECTED"):
                try:
                    c.hangup(pj.CallOpParam())
                except pj.Error:
                    pass  # already ending
        run_until(lambda: False, 1)

    hang_up_all()

    # A placed call (A -> 1001), held on 1001's shard, moved to B by *75 on 1000's shard.
    before = len(caller.calls)
    placed = Call(a, "A-placed")
    a.calls.append(placed)
    placed.makeCall(f"sip:1001@{PROXY}", pj.CallOpParam(True))
    checks["placed: 1001 answered A"] = run_until(lambda: placed.state == "CONFIRMED", 15)
    mover2 = Call(b, "B-move-placed")
    b.calls.append(mover2)
    t_move2 = time.time()
    mover2.makeCall(f"sip:*75@{PROXY}", pj.CallOpParam(True))
    checks["placed: B connected to 1001"] = run_until(
        lambda: mover2.state == "CONFIRMED"
        and any(
            c.name == "caller-replacing" and c.state == "CONFIRMED" for c in caller.calls[before:]
        ),
        15,
    )
    checks["placed: A got its BYE"] = run_until(lambda: placed.state == "DISCONNECTED", 10)
    placed_bye_after = round(time.time() - t_move2, 2)
    with urllib.request.urlopen(f"http://{ADMIN}/extensions/1000/devices", timeout=5) as r:
        devices = json.load(r)["devices"]
    placed_in_call = [d["source"] for d in devices if d.get("in_call")]
    checks["placed: devices: B in the call"] = placed_in_call == [f"127.0.0.1:{ports['B']}"]

    hang_up_all()
    print(
        json.dumps(
            {
                "checks": checks,
                "a_bye_after_s": a_bye_after,
                "placed_a_bye_after_s": placed_bye_after,
                "ports": ports,
                "in_call": in_call,
                "pjsip": ep.libVersion().full,
                "events": events,
            }
        )
    )
    sys.stdout.flush()
    ep.libDestroy()
    # Leave without running the Call objects' destructors after the library is gone (PJSIP
    # asserts on them).
    os._exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
