"""Who asked: what the client says (operator, host, reason) and what the transport proves.

The CLI sends ``X-Hotfix-User``, ``X-Hotfix-Host`` and, with ``--reason``,
``X-Hotfix-Reason`` (a ticket id, a sentence). Those are claims: any client
can send any value, so the audit keeps them apart from the transport's own
evidence, which a client cannot choose: the TCP peer address, or for a Unix
socket the peer's uid and pid from the kernel (``SO_PEERCRED``). The
``actor`` string that reaches the transaction's audit names both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._audit import printable

USER_HEADER = "x-hotfix-user"
HOST_HEADER = "x-hotfix-host"
REASON_HEADER = "x-hotfix-reason"
#: Longest claimed value kept (longer ones are cut; control characters escaped).
MAX_CLAIM = 200


def claims(headers: Mapping[str, str]) -> dict[str, str]:
    """``operator_user``/``operator_host``/``operator_reason`` sent by the client, log-safe."""
    out = {}
    for key, header in (("operator_user", USER_HEADER), ("operator_host", HOST_HEADER),
                        ("operator_reason", REASON_HEADER)):
        value = headers.get(header, "").strip()
        if value:
            out[key] = printable(value, MAX_CLAIM)
    return out


def evidence(transport: str, remote: str, peer_pid: int | None, peer_uid: int | None) -> dict[str, Any]:
    """What the transport proves about the peer."""
    out: dict[str, Any] = {"transport": transport}
    if transport == "unix":
        out["peer_pid"] = peer_pid
        out["peer_uid"] = peer_uid
    elif remote:
        out["remote"] = printable(remote, 100)
    return out


def actor(transport: str, remote: str, peer_pid: int | None, peer_uid: int | None,
          headers: Mapping[str, str]) -> str:
    """One line for the transaction's audit: ``alice@laptop via unix pid=41 uid=1000 (reason: INC-7)``."""
    said = claims(headers)
    if transport == "unix":
        proof = f"unix pid={peer_pid if peer_pid is not None else '?'} uid={peer_uid if peer_uid is not None else '?'}"
    else:
        proof = f"{transport} {printable(remote, 100) if remote else '(peer unknown)'}"
    who = said.get("operator_user", "")
    if who and said.get("operator_host"):
        who = f"{who}@{said['operator_host']}"
    text = f"admin endpoint: {who + ' via ' if who else ''}{proof}"
    if said.get("operator_reason"):
        text += f" (reason: {said['operator_reason']})"
    return text
