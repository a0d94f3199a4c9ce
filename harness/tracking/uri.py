"""Tracking URIs as they may be shown: the password masked.

A tracking URI may carry a password (``postgresql://harness:secret@db:5432/mlflow``, ``https://ann:pw@host``,
``...?password=secret``). Everything the tracking package prints, logs, raises or stores shows it through
:func:`redact_uri`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# Query or conninfo keys whose value is a secret (matched case-insensitively).
SECRET_KEYS = ("password", "passwd", "pwd", "secret", "token", "access_token", "api_key", "apikey", "sslpassword")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)(.*)$", re.DOTALL)
_SECRET_VALUE = re.compile(rf"((?:^|[?&;\s])(?:{'|'.join(SECRET_KEYS)})=)([^&;#\s]*)", re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """``uri`` with its password replaced by ``***``: the user-info password (``scheme://user:***@host...``) and
    the value of any secret query or conninfo key (``?password=***``, ``token=***``). A URI without one is
    returned unchanged.

    The user info ends at the LAST ``@`` (a password may itself hold ``@``, ``/`` or ``?`` when a user did not
    percent-encode it); when in doubt this masks too much rather than too little.
    """
    text = str(uri)
    m = _SCHEME.match(text)
    if m is not None:
        scheme, body = m.groups()
        at = body.rfind("@")
        if at >= 0 and ":" in body[:at]:
            user = body[:at].split(":", 1)[0]
            text = f"{scheme}{user}:{MASK}@{body[at + 1 :]}"
    return _SECRET_VALUE.sub(lambda s: s.group(1) + (MASK if s.group(2) else ""), text)


def redact_overrides(overrides: Iterable[str]) -> list[str]:
    """Hydra overrides with every URI's password masked (``tracking.uri=postgresql://user:***@host/db``), whether
    written as on the command line or as Hydra hands them to a job (``postgresql\\://user\\:secret@...``, its
    ``:`` escaped: an override holding a URI comes back unescaped)."""

    def shown(override: str) -> str:
        key, sep, value = override.partition("=")
        plain = value.replace("\\", "")
        return f"{key}{sep}{redact_uri(plain)}" if "://" in plain else override

    return [shown(o) for o in overrides]
