"""``hotfix run``: the launcher that bootstraps hotfix into every Python process of a service.

See ``_launch.py`` (the command), ``bootstrap/sitecustomize.py`` (what runs in
each process), ``_bootstrap.py`` (install, endpoint, fork), ``_config.py``
(options and their environment twins), ``_process.py`` (the process's role),
``_loops.py`` (every asyncio event loop registered as a safepoints worker).
"""

from ._config import CheckSpec, ConfigError, RunConfig
from ._process import process_info

__all__ = ["CheckSpec", "ConfigError", "RunConfig", "process_info"]
