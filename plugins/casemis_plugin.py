"""Airflow plugin: the *CASEMIS Import* page in the Airflow UI.

Airflow's plugin loader imports this file only (see ``.airflowignore``). It mounts the
page's app on the API server at ``/casemis`` and adds a "CASEMIS Import" entry to the UI's
navigation that shows the page inside the UI (``/plugin/casemis-import``). The app checks
the Airflow login and permissions itself: Airflow adds none to plugin apps.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from casemis.web import LazyApp

# A small document icon (inline, so no unauthenticated static route is needed).
_ICON = (
    "data:image/svg+xml;utf8,"
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='%23017cee' "
    "stroke-width='2' stroke-linecap='round' stroke-linejoin='round'>"
    "<path d='M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8z'/>"
    "<polyline points='14 2 14 8 20 8'/><path d='M12 18v-6'/><path d='m9 15 3 3 3-3'/></svg>"
)


class CasemisImportPlugin(AirflowPlugin):
    """Registers the page (a FastAPI app) and its navigation entry."""

    name = "casemis_import"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": "/casemis", "name": "CASEMIS Import"}]
    external_views = [
        {
            "name": "CASEMIS Import",
            "href": "/casemis/",
            "url_route": "casemis-import",
            "destination": "nav",
            "icon": _ICON,
            "nav_top_level": True,
        }
    ]
