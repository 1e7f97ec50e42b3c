#!/usr/bin/env python3
"""Fan-in worker for the real QLAM Core (bench/fanin.sh): N processes call
`refresh_credentials(force=False)` at once through tests/interop/qlam_core_driver.py `ensure`.

    qlam_core_fanin.py DRIVER N OUTDIR READY GATE CONTEXT PROVIDER

Imports qlam_core once, then forks N children (copy-on-write: 500 separate interpreters would
need about 17 GiB, more than this machine has). Each child appends one byte to READY, blocks in
open(GATE) (a FIFO the harness opens for writing to release everyone at once), runs the driver's
`ensure`, and writes OUTDIR/<i>.json: {"ok", "refreshed", "error", "elapsed_us", "done_unix_ns"}.
Never prints a token (the driver prints fingerprints only).
"""
import contextlib
import importlib.util
import io
import json
import os
import sys
import time


def main():
    driver, n, outdir, ready, gate, context, provider = sys.argv[1:8]
    n = int(n)
    # What the driver imports inside main(), imported once here so that children share it.
    from qlam_core.common.context import AppContext  # noqa: F401
    from qlam_core import sdk  # noqa: F401
    from qlam_core.sdk import auth as sdk_auth  # noqa: F401
    from qlam_core.auth.client import AuthClient  # noqa: F401

    spec = importlib.util.spec_from_file_location("qlam_core_driver", driver)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            rc = 1
            try:
                with open(ready, "a") as f:
                    f.write(".")
                open(gate).close()
                t0 = time.monotonic()
                sys.argv = [driver, "ensure", context, provider]
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    code = mod.main()
                elapsed = time.monotonic() - t0
                lines = [l for l in buf.getvalue().splitlines() if l.startswith("{")]
                res = json.loads(lines[-1]) if lines else {}
                out = {
                    # A token in hand afterwards: refresh_credentials can return normally and
                    # still leave no credential (the file was deleted by another process).
                    "ok": code == 0 and bool(res.get("ok")) and res.get("fingerprint") is not None,
                    "refreshed": res.get("refreshed"),
                    "error": res.get("error"),
                    "has_credential": res.get("fingerprint") is not None,
                    "elapsed_us": int(elapsed * 1e6),
                    "done_unix_ns": str(time.time_ns()),
                }
                with open(os.path.join(outdir, f"{i}.json"), "w") as f:
                    f.write(json.dumps(out) + "\n")
                rc = 0
            finally:
                os._exit(rc)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
