#!/usr/bin/env python3
"""Drive the real QLAM Core (qlam-core from PyPI) the way its users do, for interop tests.

    qlam_core_driver.py login   CONTEXT PROVIDER   # qlam-core's own device flow (prints the code)
    qlam_core_driver.py refresh CONTEXT PROVIDER   # sdk.refresh_credentials(force=True)
    qlam_core_driver.py ensure  CONTEXT PROVIDER   # sdk.refresh_credentials(force=False): what jobs call
    qlam_core_driver.py read    CONTEXT PROVIDER   # sdk.get_credential

Prints one JSON line: {"ok": bool, "status": ..., "fingerprint": "sha256:<12 hex>" of the
access token, "refreshed": bool, "error": type name}. Never prints a token.
"""
import hashlib
import json
import sys


def fingerprint(token):
    if not token:
        return None
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def main():
    verb, context, provider = sys.argv[1:4]
    from qlam_core.common.context import AppContext
    from qlam_core import sdk
    from qlam_core.sdk import auth as sdk_auth
    from qlam_core.auth.client import AuthClient

    out = {"ok": False}
    try:
        ctx = AppContext(context_name=context)
        if verb == "login":
            with AuthClient(ctx) as client:
                result = client.login(provider)
            out["ok"] = bool(result.get(provider))
        elif verb in ("refresh", "ensure"):
            result = sdk_auth.refresh_credentials(ctx, provider, force=(verb == "refresh"))
            out["refreshed"] = bool(result.get(provider))
            out["ok"] = True
        elif verb != "read":
            raise SystemExit(f"unknown verb {verb}")
        cred = sdk_auth.get_credential(ctx, provider)
        if cred is not None:
            out["status"] = str(getattr(cred, "status", None))
            out["fingerprint"] = fingerprint(getattr(cred, "access_token", None))
            out["has_refresh_token"] = bool(getattr(cred, "refresh_token", None))
            if verb == "read":
                out["ok"] = out["fingerprint"] is not None
    except Exception as exc:  # report the type only: messages may quote server answers
        out["error"] = type(exc).__name__
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
