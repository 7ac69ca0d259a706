"""Keep secrets out of logs, status fields and error messages (pure; no I/O).

redis-py takes a password in several places of a URL: ``redis://user:PASS@host``,
``redis://:PASS@host``, ``redis://host?password=PASS`` (also on ``rediss://`` and
``unix://``), and TLS key passwords as ``ssl_password=PASS``. :func:`redact_url` hides each
of them; :func:`scrub` finds such URLs inside any text (an error message, a log value)
and also hides every secret this process registered (the resolved Redis password, from
``password``, ``password_file`` or the URL), wherever it appears.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

MASK = "***"
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|credential", re.IGNORECASE)
_URL = re.compile(r"\b(?:rediss?|unix)://[^\s'\"<>]+", re.IGNORECASE)
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Hide ``value`` from everything :func:`scrub` sees from now on (short values excepted:
    masking a 2-character password would mangle every log line without protecting it)."""
    if value and len(value) >= 4:
        _secrets.add(value)
        _secrets.add(unquote(value))


def url_secrets(url: str) -> list[str]:
    """The secrets written in a Redis URL: the userinfo password and password-like params."""
    parts = urlsplit(url)
    out = [parts.password] if parts.password else []
    out += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if _SECRET_PARAM.search(k)]
    return [unquote(s) for s in out if s]


def redact_url(url: str) -> str:
    """``redis://user:***@host/0?password=***`` for logs: every credential form masked."""
    head, sep, query = url.partition("?")
    netloc = urlsplit(head).netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            head = head.replace(netloc, f"{userinfo.split(':', 1)[0]}:{MASK}@{host}", 1)
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*"
            )
    return head + sep + query


def has_credentials(url: str) -> bool:
    """Whether the URL itself carries a password (readable in the process list)."""
    return bool(url_secrets(url))


def scrub(text: str) -> str:
    """``text`` with Redis URLs redacted and every registered secret masked."""
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
