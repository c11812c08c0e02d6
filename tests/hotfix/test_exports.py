"""Pin the public surface of each package (like trio's test_exports)."""

from __future__ import annotations

import hotfix
import hotfix.admin
import hotfix.integrations
import safepoints
import verification

PUBLIC = {
    hotfix: {
        "HotfixError", "JSONFormatter", "Patch", "PatchRejected", "PatchRolledBack", "PatchStatus", "Reason", "Rollback",
        "RollbackIncomplete", "SignalHandle", "State", "SwapEvent", "UnsupportedInterpreter",
        "WatchEvent", "Watcher", "apply", "configure", "dry_run", "history", "install", "install_signal_handler",
        "installed", "rollback", "stale_modules", "uninstall", "watch",
    },
    hotfix.admin: {
        "API_PREFIX", "ASGIApp", "AdminServer", "Client", "EndpointLimits", "MAX_BODY", "ROUTES", "Reply", "SCHEMA_VERSION", "TOKEN_ENV",
        "Unreachable", "WSGIApp", "asgi_app", "build_openapi", "default_token_file", "serve", "serve_socket_dir",
        "wsgi_app",
    },
    hotfix.integrations: {
        "ASGIMiddleware", "UnitOfWork", "WSGIMiddleware", "connect_celery", "cover_executor", "cover_executors",
        "covered", "enable_hooks",
    },
    safepoints: {
        "HeldWorker", "PauseInfo", "PauseTimeout", "Statistics", "WorkerInfo", "async_critical", "asyncio_worker",
        "checkpoint", "critical",
        "current_pause_holder", "idle", "pause", "statistics", "worker",
    },
    verification: {
        "AddDefinition", "AddEnumMembers", "BLOCKED", "Baseline", "Change", "ClassDef", "CodeSet", "Dependent", "FileState",
        "Finding", "FunctionDef", "Impact", "ModifyFunction", "Plan", "Probe", "REASONS", "RISKY", "Rebind",
        "RemoveName", "Report", "RetargetClosure", "RunStatement", "SAFE", "SCHEMA_VERSION", "SourceProblem",
        "SourceSection", "ThreadImpact", "UNCHANGED", "UpdateStarImport", "VERDICTS", "analyze", "build_model", "compare_files",
        "iter_code_tree", "module_source_path", "prebuild_model", "read_state", "sha256_hex", "verify_swap", "yielding",
    },
}


def test_public_names_are_pinned():
    for package, names in PUBLIC.items():
        assert set(package.__all__) == names, package.__name__
        for name in names:
            assert hasattr(package, name), (package.__name__, name)


def test_no_private_module_leaks_a_public_name():
    for package in PUBLIC:
        public = {n for n in dir(package) if not n.startswith("_")}
        submodules = {n for n in public if type(getattr(package, n)).__name__ == "module"}
        assert public - submodules - set(package.__all__) == set(), package.__name__


def test_exceptions_derive_from_hotfix_error_and_document_themselves():
    for exc in (hotfix.PatchRejected, hotfix.PatchRolledBack, hotfix.RollbackIncomplete):
        assert issubclass(exc, hotfix.HotfixError)
        assert "Raised" in exc.__doc__
    assert "raised" in safepoints.PauseTimeout.__doc__.lower()
