#!/usr/bin/python
"""Ansible module ``hotfix.ops.hotfix_patch``: patch a host's running Python service with hotfix.

It runs the ``hotfix`` command on the managed host and reads its ``--json``
answer; it never imports hotfix itself (the service's virtualenv may not be
the one Ansible runs modules with).
"""

from __future__ import annotations

import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]

DOCUMENTATION = r"""
module: hotfix_patch
short_description: Patch every process of a host's running Python service in place with hotfix
description:
  - Drives C(hotfix rollout --socket-dir DIR ... --json) on the managed host. Every process of the
    service serves its own endpoint C(<pid>.sock) in the socket directory (C(hotfix run) does that
    with no application code).
  - The new code is always the module's file on the host's disk; copy it there first
    (M(ansible.builtin.copy)). hotfix never writes source files.
  - Ansible's check mode runs the dry run (as O(state=checked)) and predicts C(changed).
version_added: "0.1.0"
author: hotfix maintainers
options:
  module:
    description: Dotted name of the module to patch, as the service imported it.
    type: str
    required: true
  state:
    description:
      - V(checked) dry-runs the change in every process and reports the verdict and the sha256 each
        process sees on disk; never changed.
      - V(applied) rolls the file out to every process of the host, canary first, pinned to
        O(expect_sha256); changed only when a process was patched.
      - V(rolled_back) undoes the host's last rollout (C(hotfix rollout rollback): the last one
        recorded in O(socket_dir), whatever its module) in every live process that runs it, processes
        forked since included; changed only when something was undone. Restore the previous file
        yourself: hotfix never writes source files, and until then the module shows as stale.
    type: str
    choices: [checked, applied, rolled_back]
    default: applied
  socket_dir:
    description: Directory holding the service's C(<pid>.sock) endpoints and its C(token) file.
    type: path
    required: true
  expect_sha256:
    description:
      - The reviewed version. O(state=applied) refuses to patch unless the file every process sees
        has exactly this sha256; O(state=checked) fails on a different file (reason V(sha256-mismatch)).
      - When not given, it is computed from O(path); without O(path) either, hotfix pins the version
        every process saw in its own preflight.
    type: str
  path:
    description: The module's file on the managed host, to compute O(expect_sha256) from.
    type: path
  allow_risky:
    description: Apply a change whose verdict is risky (after reviewing the dry run).
    type: bool
    default: false
  probation:
    description: Seconds to watch the patched code in each process before the next one.
    type: float
  timeout:
    description: Seconds to wait for each process's workers to park at a safepoint.
    type: float
  http_timeout:
    description: Seconds to wait for each endpoint's answer.
    type: float
  reason:
    description: Why (a ticket id); every process records it in its audit trail with the operator.
    type: str
  token_file:
    description: File holding the endpoint token (default C(<socket_dir>/token)).
    type: path
  executable:
    description: The C(hotfix) command on the managed host (default C(hotfix) on PATH).
    type: path
    aliases: [hotfix]
notes:
  - Exit codes of the CLI are returned as RV(rc) with a typed RV(reason).
"""

EXAMPLES = r"""
- name: Dry run on every process
  hotfix.ops.hotfix_patch:
    module: billing
    socket_dir: /run/app/hotfix
    state: checked

- name: Apply the reviewed version, canary first
  hotfix.ops.hotfix_patch:
    module: billing
    socket_dir: /run/app/hotfix
    expect_sha256: "{{ reviewed_sha256 }}"
    probation: 10
    reason: "INC-4711 rounding fix"

- name: Undo the host's last rollout
  hotfix.ops.hotfix_patch:
    module: billing
    socket_dir: /run/app/hotfix
    state: rolled_back
"""

RETURN = r"""
rc:
  description: >-
    When the task failed, the exit code of the hotfix command (1 risky, rolled back or not converged,
    2 usage, 3 blocked or rejected, 4 unreachable); 0 when it succeeded (the command's own code is in
    RV(cli.exit_code)).
  type: int
  returned: always
reason:
  description: >-
    Why the task failed or could not proceed: unreachable, usage, sha256-mismatch, blocked, risky,
    rolled-back, inconsistent, not-converged, incomplete, rejected, no-json; null on success.
  type: str
  returned: always
outcome:
  description: The CLI's outcome (dry-run, applied, unchanged, aborted, rolled-back, inconsistent).
  type: str
  returned: always
sha256:
  description: The version the processes see on disk (when they agree).
  type: str
  returned: always
expect_sha256:
  description: The pin used, if any.
  type: str
  returned: always
converged:
  description: Every process that answered runs the file on disk (and it is the pinned version).
  type: bool
  returned: always
processes:
  description: One entry per process (pid, role, outcome, verdict, sha256, patch_id, message), as the CLI reports them.
  type: list
  elements: dict
  returned: always
cli:
  description: The CLI's whole JSON document.
  type: dict
  returned: when the CLI answered
"""

# the CLI's exit codes
EXIT_OK = 0
EXIT_RISKY = 1  # risky, or rolled back
EXIT_USAGE = 2
EXIT_REJECTED = 3  # blocked or rejected
EXIT_UNREACHABLE = 4
CHANGING_VERDICTS = ("safe", "risky")


class Hotfix:
    """The hotfix command on this host, run with ``--json``."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        params = module.params
        self.executable = params["executable"] or module.get_bin_path("hotfix", required=True)
        self.socket_dir = params["socket_dir"]
        self.name = params["module"]
        self.ran: list[list[str]] = []
        self.stderr: list[str] = []

    def base(self) -> list[str]:
        argv = [self.executable, "--json"]
        for option, key in (("--token-file", "token_file"), ("--http-timeout", "http_timeout"), ("--reason", "reason")):
            if self.module.params[key] is not None:
                argv += [option, str(self.module.params[key])]
        return argv

    def run(self, argv: list[str]) -> tuple[int, dict]:
        self.ran.append(argv)
        rc, out, err = self.module.run_command(argv, check_rc=False)
        if err:
            self.stderr.append(err)
        try:
            doc = json.loads(out)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self.module.fail_json(msg=f"{argv[0]} did not answer with one JSON document (exit {rc})", rc=rc,
                                  reason="no-json", stdout=out, stderr=err, cmd=argv)
        return rc, doc

    def rollout(self, action: str, *extra: str) -> tuple[int, dict]:
        return self.run([*self.base(), "rollout", "--socket-dir", self.socket_dir, action, *extra])


def disk_versions(doc: dict) -> set:
    """The sha256 of the file each answering process sees on disk."""
    return {p.get("disk_sha256") for p in answered(doc)}


def answered(doc: dict) -> list[dict]:
    """Processes that gave a verdict (not gone, not-loaded or refusing)."""
    return [p for p in doc.get("processes") or [] if p.get("verdict")]


def failure_reason(rc: int, doc: dict, expect: str | None) -> str:
    """A typed reason, from the CLI's fields (never from its wording)."""
    given = doc.get("reason") or (doc.get("error") or {}).get("kind")
    if isinstance(given, str) and given:
        return given
    if rc == EXIT_UNREACHABLE:
        return "unreachable"
    if rc == EXIT_USAGE:
        return "usage"
    if expect and (disk_versions(doc) - {expect}):
        return "sha256-mismatch"
    verdicts = {p.get("verdict") for p in answered(doc)}
    if "blocked" in verdicts:
        return "blocked"
    if doc.get("outcome") in ("rolled-back", "inconsistent", "not-converged", "incomplete"):
        return doc["outcome"]
    if rc == EXIT_RISKY and "risky" in verdicts:
        return "risky"
    return "rejected"


def cli_message(doc: dict) -> str:
    return doc.get("message") or (doc.get("error") or {}).get("message") or ""


def summary(hotfix: Hotfix, rc: int, doc: dict, expect: str | None) -> dict:
    procs = doc.get("processes") or []
    live = answered(doc)
    converged = bool(live) and all(p.get("verdict") == "unchanged" for p in live) and (
        not expect or disk_versions(doc) == {expect})
    if isinstance(doc.get("converged"), bool):
        converged = doc["converged"] and (not expect or disk_versions(doc) <= {expect, None})
    return {
        "rc": rc, "outcome": doc.get("outcome"), "sha256": doc.get("sha256"), "expect_sha256": expect,
        "converged": converged, "processes": procs, "cli": doc, "cmd": hotfix.ran,
        "stderr": "".join(hotfix.stderr),
    }


def pinned_version(module: AnsibleModule) -> str | None:
    params = module.params
    if params["expect_sha256"]:
        sha = params["expect_sha256"].strip().lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            module.fail_json(msg="expect_sha256 must be 64 hex digits", rc=EXIT_USAGE, reason="usage")
        return sha
    if params["path"]:
        try:
            with open(params["path"], "rb") as fh:
                return hashlib.sha256(fh.read()).hexdigest()
        except OSError as exc:
            module.fail_json(msg=f"cannot read {params['path']}: {exc.strerror or exc}", rc=EXIT_USAGE,
                             reason="usage")
    return None


def check(module: AnsibleModule, hotfix: Hotfix, expect: str | None, predict: bool) -> None:
    """Dry run in every process; fail when the change could not be applied as asked."""
    rc, doc = hotfix.rollout("dry-run", hotfix.name)
    result = summary(hotfix, rc, doc, expect)
    live = answered(doc)
    would_change = any(p.get("verdict") in CHANGING_VERDICTS for p in live)
    ok = rc == EXIT_OK or (rc == EXIT_RISKY and module.params["allow_risky"])
    reason = None
    elsewhere = expect is not None and bool(disk_versions(doc) - {expect})
    if not ok:
        reason = failure_reason(rc, doc, expect)
    elif elsewhere and module.check_mode:
        # in check mode the copy before this task did not happen: say so, do not fail
        module.warn(f"check mode: the processes see another file than the reviewed {(expect or '')[:12]}; "
                    "the verdict is about the file on disk now")
        would_change = True
    elif elsewhere:
        reason = "sha256-mismatch"
    if reason:
        seen = ", ".join(sorted(s[:12] for s in disk_versions(doc) if s))
        message = cli_message(doc)
        if reason == "sha256-mismatch":
            message = f"the processes see {seen or 'no file'}, not the reviewed {expect[:12] if expect else '?'}"
        elif reason == "risky":
            message = "the change is risky: review the dry run, then pass allow_risky"
        module.fail_json(msg=f"{hotfix.name} in {hotfix.socket_dir}: {message} (hotfix exit {rc})", reason=reason,
                         **{k: v for k, v in result.items() if k != "rc"}, rc=rc)
    verdicts = {str(p.get("pid")): p.get("verdict") for p in live}
    result["rc"] = EXIT_OK  # a risky verdict allowed by allow_risky is not a failure (cli.exit_code keeps 1)
    module.exit_json(changed=predict and would_change, reason=None, verdicts=verdicts, would_change=would_change,
                     msg=cli_message(doc), **result)


def apply(module: AnsibleModule, hotfix: Hotfix, expect: str | None) -> None:
    params = module.params
    extra = [hotfix.name]
    if expect:
        extra += ["--expect-sha256", expect]
    if params["allow_risky"]:
        extra.append("--allow-risky")
    for key in ("probation", "timeout"):
        if params[key] is not None:
            extra += [f"--{key}", str(params[key])]
    rc, doc = hotfix.rollout("apply", *extra)
    result = summary(hotfix, rc, doc, expect)
    if rc != EXIT_OK:
        reason = failure_reason(rc, doc, expect)
        module.fail_json(msg=f"{hotfix.name} in {hotfix.socket_dir}: {cli_message(doc)} (hotfix exit {rc})",
                         reason=reason, **{k: v for k, v in result.items() if k != "rc"}, rc=rc)
    changed = doc.get("outcome") == "applied" and any(p.get("outcome") == "applied" for p in doc.get("processes") or [])
    result["converged"] = True  # exit 0: every live process that has the module runs the pinned file
    module.exit_json(changed=changed, reason=None, msg=cli_message(doc), **result)


def roll_back(module: AnsibleModule, hotfix: Hotfix) -> None:
    """Undo the host's last rollout in every live process that runs it (``hotfix rollout rollback``)."""
    rc, doc = hotfix.rollout("rollback")
    result = summary(hotfix, rc, doc, None)
    result["converged"] = doc.get("converged") is True
    if rc == EXIT_USAGE and doc.get("outcome") == "aborted" and not doc.get("processes"):
        # no rollout recorded in this socket directory: nothing to undo
        result["rc"] = EXIT_OK
        module.exit_json(changed=False, reason=None, msg=cli_message(doc), **result)
    if rc != EXIT_OK:
        module.fail_json(msg=f"{hotfix.name} in {hotfix.socket_dir}: {cli_message(doc)} (hotfix exit {rc})",
                         reason=failure_reason(rc, doc, None), **{k: v for k, v in result.items() if k != "rc"}, rc=rc)
    if doc.get("module") not in (None, hotfix.name):
        module.warn(f"the last rollout in {hotfix.socket_dir} was of {doc.get('module')}, not {hotfix.name}")
    changed = any(p.get("outcome") == "rolled-back" for p in doc.get("processes") or [])
    module.exit_json(changed=changed, reason=None, msg=cli_message(doc), **result)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "module": {"type": "str", "required": True},
            "state": {"type": "str", "default": "applied", "choices": ["checked", "applied", "rolled_back"]},
            "socket_dir": {"type": "path", "required": True},
            "expect_sha256": {"type": "str"},
            "path": {"type": "path"},
            "allow_risky": {"type": "bool", "default": False},
            "probation": {"type": "float"},
            "timeout": {"type": "float"},
            "http_timeout": {"type": "float"},
            "reason": {"type": "str"},
            "token_file": {"type": "path", "no_log": False},
            "executable": {"type": "path", "aliases": ["hotfix"]},
        },
        supports_check_mode=True,
    )
    if not os.path.isdir(module.params["socket_dir"]):
        module.fail_json(msg=f"{module.params['socket_dir']}: no such directory (is the service running?)",
                         rc=EXIT_UNREACHABLE, reason="unreachable")
    hotfix = Hotfix(module)
    state = module.params["state"]
    if state == "rolled_back":
        if module.check_mode:
            module.exit_json(changed=False, rc=EXIT_OK, reason=None, msg="check mode: nothing rolled back")
        roll_back(module, hotfix)
    expect = pinned_version(module)
    if state == "checked" or module.check_mode:
        check(module, hotfix, expect, predict=state == "applied")
    apply(module, hotfix, expect)


if __name__ == "__main__":
    main()
