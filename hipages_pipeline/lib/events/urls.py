"""URL rules of the data contract: host -> registrable domain (url_level1), path -> url_level2/3.

Parsing is done by the standard library (``urllib.parse.urlsplit``, ``ipaddress``) and the
registrable domain by the ``publicsuffixlist`` package, which ships the Public Suffix List and
never touches the network. The function is applied once per *distinct* URL of a batch, never per
event (see :func:`split_urls`).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

import pandas as pd
from publicsuffixlist import PublicSuffixList

ALLOWED_SCHEMES = ("http", "https")


class UrlParts(NamedTuple):
    """The contract's view of one URL; ``error`` is set (and the levels are None) when it has none."""

    url_level1: str | None
    url_level2: str | None
    url_level3: str | None
    error: str | None


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def _bad(message: str) -> UrlParts:
    return UrlParts(None, None, None, message)


def split_url(url: str) -> UrlParts:
    """Split one URL into (url_level1, url_level2, url_level3) by the contract's rules.

    - Surrounding white space is ignored. A URL without ``scheme://`` is read as if it had one
      (``www.hipages.com.au/x``, ``hipages.com.au/x``).
    - Only ``http`` and ``https`` are web pages; any other scheme is an error.
    - url_level1 is the registrable domain (public suffix + one label) of the host, lower-cased,
      without port, user info or trailing dot: ``w3.hipages.com.au`` -> ``hipages.com.au``.
      A host that is an IP address or has no registrable domain (``localhost``, ``com.au``) is
      an error. International hosts are kept as written (Unicode or punycode), lower-cased.
    - url_level2 / url_level3 are the first and second non-empty path segments, as written
      (not percent-decoded); query string and fragment are not part of the path. Missing -> None.

    Returns a :class:`UrlParts`; never raises for bad input (the error says what is wrong).
    """
    text = url.strip()
    if not text:
        return _bad("url is empty")
    if "://" not in text:
        text = "http://" + text.lstrip("/")
    try:
        parts = urlsplit(text)
        host = parts.hostname  # lower-cased, user info and port removed
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        return _bad(f"url {url!r} cannot be parsed: {exc}")
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return _bad(f"url {url!r} has scheme {parts.scheme!r}, expected http or https")
    host = (host or "").rstrip(".")
    if not host:
        return _bad(f"url {url!r} has no host")
    if any(ch.isspace() for ch in host) or ".." in host:
        return _bad(f"url {url!r} has an invalid host {host!r}")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return _bad(f"url {url!r} has an IP address as host, not a domain")
    except ValueError:
        pass
    domain = _psl().privatesuffix(host)
    if domain is None:
        return _bad(f"url {url!r} host {host!r} has no registrable domain")
    segments = [segment for segment in parts.path.split("/") if segment]
    level2 = segments[0] if segments else None
    level3 = segments[1] if len(segments) > 1 else None
    return UrlParts(domain, level2, level3, None)


_CACHED_URL_CHARS = 2048


@lru_cache(maxsize=200_000)
def _split_url_cached(url: str) -> UrlParts:
    """:func:`split_url`, remembered across batches and steps (a site has a bounded set of URLs)."""
    return split_url(url)


def split_urls(urls: pd.Series) -> pd.DataFrame:
    """Apply :func:`split_url` to each distinct value of ``urls`` (once per process for URLs up to
    2048 characters: results are cached).

    Returns a DataFrame with columns ``url`` (str, the distinct input values), ``url_level1``,
    ``url_level2``, ``url_level3`` (str or None) and ``url_error`` (str or None), one row per
    distinct URL, ready to be joined back on ``url``.
    """
    distinct = pd.Series(urls.dropna().unique(), dtype="object")
    parts = [_split_url_cached(u) if len(u) <= _CACHED_URL_CHARS else split_url(u) for u in distinct]
    frame = pd.DataFrame(parts, columns=["url_level1", "url_level2", "url_level3", "url_error"])
    frame.insert(0, "url", distinct)
    return frame.astype("object")
