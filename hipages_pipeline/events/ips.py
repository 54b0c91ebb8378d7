"""IP rules of the data contract: validate, then anonymise (never keep a raw IP).

IPv4 addresses keep their first three octets (the last is zeroed: /24); IPv6 addresses keep
their first 64 bits (/64). An invalid address (``111.222.333.4`` has an octet over 255) becomes
NULL with ``ip_valid = False``. Surrounding white space is ignored.

The reference implementation is the standard library's ``ipaddress`` (:func:`anonymise_ip`).
:func:`anonymise_ips` applies the same rule to a whole column: dotted-quad IPv4, the common case,
is checked and anonymised in DuckDB SQL (four decimal octets 0-255 without leading zeros, which is
exactly what ``ipaddress`` accepts); every value of another form (IPv6, white space around it,
anything else) goes through ``ipaddress``, once per distinct value. A test checks that both agree.
"""

from __future__ import annotations

import ipaddress

import duckdb
import pandas as pd

_OCTET = "(0|[1-9][0-9]{0,2})"
_IPV4_SQL = rf"""
WITH distinct_ips AS (SELECT DISTINCT ip FROM ips WHERE ip IS NOT NULL),
parts AS (
    SELECT ip, regexp_extract(ip, '^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$', ['a', 'b', 'c', 'd']) AS o
    FROM distinct_ips
)
SELECT ip,
    CASE WHEN o.a <> '' AND TRY_CAST(o.a AS INTEGER) <= 255 AND TRY_CAST(o.b AS INTEGER) <= 255
              AND TRY_CAST(o.c AS INTEGER) <= 255 AND TRY_CAST(o.d AS INTEGER) <= 255
         THEN concat_ws('.', o.a, o.b, o.c, '0') END AS ip_anonymised,
    o.a = '' AS other_form
FROM parts
"""


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
    """Anonymise each distinct value of ``ips`` (strings or None).

    Returns a DataFrame with columns ``ip`` (the distinct raw values), ``ip_anonymised`` (str or
    None) and ``ip_valid`` (bool), one row per distinct non-null raw value, to be joined back on
    ``ip``.
    """
    con = duckdb.connect()
    con.register("ips", pd.DataFrame({"ip": ips.astype("object")}))
    frame = con.sql(_IPV4_SQL).df()
    con.close()
    others = frame["other_form"].fillna(False).astype(bool)
    frame.loc[others, "ip_anonymised"] = [anonymise_ip(v) for v in frame.loc[others, "ip"]]
    frame = frame.drop(columns="other_form").astype({"ip": "object", "ip_anonymised": "object"})
    frame["ip_anonymised"] = frame["ip_anonymised"].where(frame["ip_anonymised"].notna(), None)
    frame["ip_valid"] = frame["ip_anonymised"].notna()
    return frame.sort_values("ip", ignore_index=True)
