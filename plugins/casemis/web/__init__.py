"""The *CASEMIS Import* page: a small FastAPI app the Airflow API server mounts at ``/casemis``.

``casemis_plugin.py`` (the only file Airflow's plugin loader imports) registers
:class:`LazyApp` and a navigation entry that shows the page inside the Airflow UI. The
modules:

* ``security``: who may do what (Airflow's own users and permissions), CSRF protection;
* ``backend``: the ``casemis_config`` Variable, the DAG's state, triggering runs, recent runs;
* ``uploads``: one-time import files, streamed to the uploads folder with a size limit;
* ``app``: the routes and the server-rendered HTML (``templates/page.html``).
"""

from __future__ import annotations

from typing import Any


class LazyApp:
    """An ASGI app that builds the page's FastAPI app on its first request.

    Every Airflow component (workers included, for every task) imports the plugin file;
    deferring FastAPI and the API server's security modules to the first request keeps
    that import cheap. Only the API server ever calls this.
    """

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one ASGI event with the real app."""
        if self._app is None:
            from casemis.web.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)
