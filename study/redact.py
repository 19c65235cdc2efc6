"""Secrets never reach a file or log the study writes: credentials in URLs and values of keys whose names
mark a secret are replaced by a mask. Only the written copies are redacted; the live config keeps the
real values (the Optuna storage still connects with its URL)."""

from __future__ import annotations

import re

MASK = "***"

# A key naming a secret, as a whole word of the key (so `tokenizer`, `max_tokens` are not secrets).
SECRET_KEY = re.compile(r"(?:^|[^a-z])(password|passwd|passphrase|pwd|secret|token|api_?key|access_?key|"
                        r"secret_?key|private_?key|credentials?)(?:$|[^a-z])", re.IGNORECASE)
# scheme://user:password@host -> scheme://user:***@host (RFC 3986 userinfo).
URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@/\s]+)(?=@)")
# ?password=...&sslpassword=... in a URL's query or a libpq key=value string.
QUERY_SECRET = re.compile(r"(?P<head>(?:^|[?&;\s])[a-z_]*(?:password|passwd|pwd|secret|token|api_?key|"
                          r"access_?key|signature|sig)=)(?P<secret>[^&;\s#]+)", re.IGNORECASE)


def redact_text(text: str) -> str:
    """Mask credentials inside a string (URL passwords, secret query parameters)."""
    text = URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    return QUERY_SECRET.sub(lambda m: m["head"] + MASK, text)


def is_secret_key(key) -> bool:
    """Whether a config key's name marks its value as a secret."""
    return isinstance(key, str) and SECRET_KEY.search(key) is not None


def redact(obj):
    """A copy of a config dict (or list, or string) with every secret masked; other values unchanged."""
    if isinstance(obj, dict):
        return {k: (MASK if is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj
