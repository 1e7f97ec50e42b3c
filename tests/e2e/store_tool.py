#!/usr/bin/python3
"""Small helper for tests/e2e/run.sh: look into or age a QLAM Core v1 credentials file.

    store_tool.py expire FILE   # make the access token look 2 h old with a 1 h lifetime
    store_tool.py get FILE KEY  # print extra.token_data[KEY] (access_token, refresh_token, ...)

`expire` runs as the file's owner: it writes a temp file (0600) in the same directory, fsyncs
it and renames it over FILE, as QLAM Core does, so owner and mode stay the user's. The token
strings themselves are not changed; only the timestamps say the access token has expired.
"""
import datetime as dt
import json
import os
import sys
import tempfile


def expire(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    td = doc["extra"]["token_data"]
    created = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    td["created_at"] = created.isoformat()  # ISO 8601 with "T", as QLAM Core writes it
    td["expires_in"] = 3600
    # Top level: Python's str(datetime) (space separator), created_at truncated to the minute
    # plus expires_in, as QLAM Core computes it.
    doc["expires_at"] = str(created.replace(second=0, microsecond=0) + dt.timedelta(seconds=3600))
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".e2e-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def get(path, key):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    value = doc["extra"]["token_data"].get(key)
    print("" if value is None else value)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "expire":
        expire(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "get":
        get(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
