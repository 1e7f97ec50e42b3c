#!/usr/bin/env python3
"""Summarises one fan-in run of bench/fanin.sh as a JSON line and a Markdown table row.

    fanin_report.py IMPL N RUNDIR

RUNDIR holds out/*.json (one line per worker), release_ns, stats.json (/_test/stats after the
run) and check.json (`obtain check`: is the login still usable?).
"""
import glob
import json
import os
import sys


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def main():
    impl, n, run = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    release = int(open(os.path.join(run, "release_ns")).read().strip())
    results = []
    for f in sorted(glob.glob(os.path.join(run, "out", "*.json"))):
        text = open(f).read().strip().splitlines()
        if text:
            results.append(json.loads(text[-1]))
    stats = json.load(open(os.path.join(run, "stats.json")))
    check = json.load(open(os.path.join(run, "check.json")))
    walls = [(int(r["done_unix_ns"]) - release) / 1e6 for r in results]
    inproc = [r["elapsed_us"] / 1e3 for r in results]
    ok = sum(1 for r in results if r.get("ok"))
    errors = {}
    for r in results:
        if not r.get("ok"):
            k = r.get("error") or "returned without a credential"
            errors[k] = errors.get(k, 0) + 1
    sources = {}
    for r in results:
        if r.get("source"):
            sources[r["source"]] = sources.get(r["source"], 0) + 1
    refresh = stats.get("token_requests", {}).get("refresh_token", 0)
    invalid = stats.get("errors_by_grant", {}).get("refresh_token", {}).get("invalid_grant", 0)
    usable = bool(check.get("file")) and bool(check.get("refresh_works"))
    summary = {
        "impl": impl,
        "n": n,
        "reported": len(results),
        "ok": ok,
        "errors": errors,
        "sources": sources,
        "idp_refresh_requests": refresh,
        "idp_refresh_successes": stats.get("successes", {}).get("refresh_token", 0),
        "invalid_grant": invalid,
        "file_exists_after": bool(check.get("file")),
        "login_usable_after": usable,
        "wall_ms_p50": round(pct(walls, 50), 1),
        "wall_ms_p99": round(pct(walls, 99), 1),
        "wall_ms_max": round(max(walls), 1) if walls else None,
        "obtain_ms_p50": round(pct(inproc, 50), 1),
        "obtain_ms_p99": round(pct(inproc, 99), 1),
    }
    print(json.dumps(summary))
    lost = "no" if usable else ("**yes (file deleted)**" if not check.get("file") else "**yes (refresh token revoked)**")
    err = ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "-"
    print(
        f"| {impl} | {n} | {refresh} | {invalid} | {lost} | {ok}/{n} ({err}) | "
        f"{summary['wall_ms_p50']} | {summary['wall_ms_p99']} | {summary['wall_ms_max']} |"
    )


if __name__ == "__main__":
    main()
