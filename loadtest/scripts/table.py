#!/usr/bin/env python3
"""Markdown table of sipfork-load result files (the README's recorded-runs tables).

usage: loadtest/scripts/table.py RESULT.json ...
Columns: run, target, rate, calls, success %, proxy CPU µs/call and % of a core, INVITE→180 and
CANCEL latency p50 / p99 / p99.9 (µs), retransmissions, other processes' CPU % in the window.
"""
import json
import sys


def lat(r, name):
    s = r["latency_us"].get(name, {})
    if not s.get("count"):
        return "–"
    return f"{s['p50']} / {s['p99']} / {s['p999']}"


print("| run | target | rate/s | calls | success % | proxy CPU µs/call | proxy CPU % | INVITE→180 µs p50 / p99 / p99.9 | CANCEL latency µs p50 / p99 / p99.9 | retrans. | other CPU % |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |")
for path in sys.argv[1:]:
    r = json.load(open(path))
    c = r.get("cpu") or {}
    print(
        f"| {r['label']} | {r['target']['name'] or r['target']['mode']} | {r['load']['rate']:.0f} "
        f"| {r['load']['started']} | {r['success_pct']:.3f} | {c.get('proxy_us_per_call', 0):.0f} "
        f"| {c.get('proxy_pct', 0):.1f} | {lat(r, 'invite_to_180')} | {lat(r, 'cancel_latency')} "
        f"| {r['counters']['retransmitted']} | {c.get('other_pct', 0):.1f} |"
    )
