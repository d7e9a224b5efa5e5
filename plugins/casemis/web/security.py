"""Who may use the page, and protection against cross-site request forgery.

Airflow mounts plugin apps without any authentication of their own, so every route here
depends on :func:`current_user` (Airflow's ``get_user``: the ``_token`` cookie the Airflow UI
sets at login, or an ``Authorization: Bearer`` token) and on a permission check against the
``casemis_import`` DAG through the configured auth manager:

=============  ==========================================================================
action         permission
=============  ==========================================================================
view           read the DAG and its runs
configure      edit the DAG **and** edit the ``casemis_config`` Variable (save, enable, disable)
trigger        create DAG runs (import now, one-time upload)
=============  ==========================================================================

State-changing requests carry a CSRF token in a hidden form field: an HMAC (itsdangerous,
keyed with ``[api] secret_key``) over the user name and a fingerprint of the session's
token, valid for a limited time. A page from another site cannot read it, so it cannot
forge a form post. Requests whose ``Origin`` (or ``Referer``) is another site are refused
as well, and Airflow's session cookie is ``SameSite=Lax``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import Depends, HTTPException, Request, status

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

DAG_ID = "casemis_import"
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 12 * 3600  # seconds a rendered form stays usable
_CSRF_SALT = "casemis-import-page-csrf"

Action = Literal["view", "configure", "trigger"]


@dataclass(frozen=True)
class Access:
    """What the current user may do on the page."""

    user_name: str
    view: bool
    configure: bool
    trigger: bool


def _team_name() -> str | None:
    from airflow.models.dag import DagModel

    try:
        return DagModel.get_team_name(DAG_ID)
    except Exception:  # noqa: BLE001 - no DAG row yet: no team
        return None


def access_for(user: BaseUser) -> Access:
    """Ask Airflow's auth manager what ``user`` may do with the import."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
        VariableDetails,
    )

    from casemis.settings import VARIABLE_KEY

    manager = get_auth_manager()
    details = DagDetails(id=DAG_ID, team_name=_team_name())

    def dag(method: str, entity: DagAccessEntity | None = None) -> bool:
        return bool(
            manager.is_authorized_dag(method=method, access_entity=entity, details=details, user=user)
        )

    view = dag("GET") and dag("GET", DagAccessEntity.RUN)
    configure = (
        view
        and dag("PUT")
        and bool(
            manager.is_authorized_variable(method="PUT", details=VariableDetails(key=VARIABLE_KEY), user=user)
        )
    )
    trigger = view and dag("POST", DagAccessEntity.RUN)
    return Access(user_name=user.get_name(), view=view, configure=configure, trigger=trigger)


def require(action: Action):  # type: ignore[no-untyped-def]
    """A FastAPI dependency: the user must be logged in (401) and allowed ``action`` (403)."""

    def dependency(user: GetUserDep) -> Access:
        access = access_for(user)
        if not getattr(access, action):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"Forbidden: you may not {action} the CASEMIS import"
            )
        return access

    return dependency


ViewAccess = Annotated[Access, Depends(require("view"))]
ConfigureAccess = Annotated[Access, Depends(require("configure"))]
TriggerAccess = Annotated[Access, Depends(require("trigger"))]


# --------------------------------------------------------------------------- CSRF


def _serializer():  # type: ignore[no-untyped-def]
    from airflow.api_fastapi.auth.tokens import get_signing_key
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(get_signing_key("api", "secret_key"), salt=_CSRF_SALT)


def _session_fingerprint(request: Request) -> str:
    """A short digest of the credential this request was authenticated with."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    header = request.headers.get("authorization", "")
    credential = (
        header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    )
    return hashlib.sha256((credential or "").encode()).hexdigest()[:24]


def csrf_token(request: Request, access: Access) -> str:
    """The token the page puts in every form (bound to this user and session)."""
    return _serializer().dumps({"u": access.user_name, "s": _session_fingerprint(request)})


def check_csrf(request: Request, access: Access, token: str | None) -> None:
    """Refuse (403) a state-changing request without this session's valid token."""
    from itsdangerous import BadData, SignatureExpired

    check_origin(request)
    if not token:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "The form is missing its security token; reload the page"
        )
    try:
        data = _serializer().loads(token, max_age=CSRF_MAX_AGE)
    except SignatureExpired:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "The form has expired; reload the page") from None
    except BadData:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "The form's security token is not valid") from None
    expected = {"u": access.user_name, "s": _session_fingerprint(request)}
    same = isinstance(data, dict) and all(
        hmac.compare_digest(str(data.get(k, "")), v) for k, v in expected.items()
    )
    if not same:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "The form belongs to another login session; reload the page"
        )


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def allowed_origins(request: Request) -> set[str]:
    """This server's origin as the browser addressed it, plus ``[api] base_url``'s."""
    from airflow.configuration import conf

    origins = {o for o in (_origin(str(request.base_url)),) if o}
    base_url = conf.get("api", "base_url", fallback="") or ""
    if (configured := _origin(base_url)) is not None:
        origins.add(configured)
    return origins


def check_origin(request: Request) -> None:
    """Refuse (403) a request a browser sent from another site (``Origin``/``Referer``)."""
    origin = request.headers.get("origin")
    if origin is None and (referer := request.headers.get("referer")):
        origin = _origin(referer) or "null"
    if origin is None:
        return  # not sent by a browser form; the CSRF token still has to match
    if origin.lower() not in allowed_origins(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Cross-site request refused")
