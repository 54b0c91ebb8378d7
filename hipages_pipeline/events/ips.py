"""IP rules of the data contract: validate, then anonymise (never keep a raw IP).

IPv4 addresses keep their first three octets (the last is zeroed: /24); IPv6 addresses keep
their first 64 bits (/64). An invalid address (``111.222.333.4`` has an octet over 255) becomes
NULL with ``ip_valid = False``. Validation is the standard library's ``ipaddress``.
"""

from __future__ import annotations

import ipaddress

import pandas as pd


def anonymise_ip(value: object) -> str | None:
    """Return the anonymised form of one IP address, or None when it is not a valid address."""
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def anonymise_ips(ips: pd.Series) -> pd.DataFrame:
    """Anonymise each distinct value of ``ips``.

    Returns a DataFrame with columns ``ip`` (the distinct raw values), ``ip_anonymised`` (str or
    None) and ``ip_valid`` (bool), one row per distinct raw value, to be joined back on ``ip``.
    """
    distinct = pd.Series(ips.dropna().unique(), dtype="object")
    anonymised = [anonymise_ip(v) for v in distinct]  # one call per distinct IP, not per event
    frame = pd.DataFrame({"ip": distinct, "ip_anonymised": pd.Series(anonymised, dtype="object")})
    frame["ip_valid"] = frame["ip_anonymised"].notna()
    return frame
