"""``hotfix ps``: the local processes that serve an admin endpoint, with their patches in effect.

Found in the default locations, without asking anyone: the endpoint files
every ``serve()`` writes in the private runtime directory (TCP and Unix
socket servers), ``<pid>.sock`` files in that directory and one level below
it (``hotfix run`` puts its socket directory there), ``$HOTFIX_SOCKET_DIR``
and every ``--socket-dir``. For each live process: pid, command line, the
endpoint, and the patches in effect: their ids and modules when a token can
be read (``--token``, ``HOTFIX_TOKEN``, the token file the server wrote, the
``token`` of a socket directory), else their count from ``health``.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from .admin._client import Client, Unreachable
from .admin._registry import entries, registry_dir
from .admin._server import pid_alive


def _command(pid: int, fallback: list[str] | None = None) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return " ".join(fallback or []) or "?"
    return " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part) or "?"


def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def discover(socket_dirs: list[str]) -> list[dict[str, Any]]:
    """Every endpoint found, one entry per endpoint: pid, url or socket, where a token may be."""
    found: dict[str, dict[str, Any]] = {}
    for entry in entries():
        key = entry.get("socket_path") or entry["url"]
        found[key] = {"pid": int(entry["pid"]), "url": entry["url"], "socket_path": entry.get("socket_path"),
                      "token_file": entry.get("token_file"), "argv": entry.get("argv")}
    base = os.path.dirname(registry_dir())
    dirs = [base, *sorted(glob.glob(os.path.join(base, "*", ""))), *socket_dirs]
    for directory in dirs:
        for path in sorted(glob.glob(os.path.join(directory, "*.sock"))):
            stem = os.path.basename(path)[:-5]
            path = os.path.abspath(path)
            if path in found or not stem.isdigit() or not pid_alive(int(stem)):
                continue
            found[path] = {"pid": int(stem), "url": None, "socket_path": path, "token_file": None, "argv": None}
    return sorted(found.values(), key=lambda e: (e["pid"], e["socket_path"] or e["url"] or ""))


def describe(entry: dict[str, Any], token: str | None) -> dict[str, Any]:
    """Ask one endpoint for its patches in effect (names with a token, a count without)."""
    out: dict[str, Any] = {"pid": entry["pid"], "command": _command(entry["pid"], entry.get("argv")),
                           "endpoint": entry["socket_path"] and f"unix:{entry['socket_path']}" or entry["url"]}
    sock = entry["socket_path"]
    files = [entry.get("token_file")] + ([sock + ".token", os.path.join(os.path.dirname(sock), "token")] if sock else [])
    tokens = list(dict.fromkeys(t for t in [token, *map(_read_token, files)] if t))
    try:
        for candidate in tokens:  # the given token, then the files this endpoint's server may have written
            client = Client(None if sock else entry["url"], socket_path=sock, token=candidate, timeout=5.0)
            reply = client.status()
            if reply.status == 200:
                patches = [p for p in reply.body.get("patches") or [] if p.get("in_effect")]
                out["patches_in_effect"] = [{"id": p["id"], "modules": p.get("modules") or []} for p in patches]
                out["patch_count"] = len(patches)
                return out
        client = Client(None if sock else entry["url"], socket_path=sock, timeout=5.0)
        reply = client.health()
        out["patches_in_effect"] = None  # not allowed to see which
        out["patch_count"] = reply.body.get("patches_in_effect")
    except (Unreachable, ValueError) as exc:
        out["error"] = str(exc)
    return out


def ps(out: Any, opts: dict) -> int:
    socket_dirs = list(opts.get("socket_dir") or [])
    if os.environ.get("HOTFIX_SOCKET_DIR"):
        socket_dirs.append(os.environ["HOTFIX_SOCKET_DIR"])
    token = opts.get("token") or (os.environ.get("HOTFIX_TOKEN") or "").strip() or _read_token(
        opts.get("token_file") or os.environ.get("HOTFIX_TOKEN_FILE"))
    processes = [describe(entry, token) for entry in discover(socket_dirs)]
    if not processes:
        out.say("no local process serves a hotfix endpoint (looked in the runtime directory"
                + (" and " + ", ".join(socket_dirs) if socket_dirs else "") + ")")
    for p in processes:
        if p.get("error"):
            patches = f"unreachable: {p['error']}"
        elif p["patches_in_effect"] is None:
            patches = f"{p['patch_count']} patch(es) in effect (no token to name them)"
        elif p["patches_in_effect"]:
            patches = "; ".join(f"{x['id']} ({', '.join(x['modules'])})" for x in p["patches_in_effect"])
        else:
            patches = "no patches in effect"
        out.say(f"{p['pid']:>8}  {p['endpoint']}\n          {p['command'][:200]}\n          {patches}")
    return out.done(0, processes=processes)
