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
_DOTTED_QUAD = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"


def ipv4_sql(column: str) -> tuple[str, str]:
    """SQL expressions over a text column: (is it a dotted quad, its anonymised form).

    The first is true when the value has the dotted-quad form (four decimal octets without leading
    zeros); the second is then the /24 network (``a.b.c.0``), or NULL when an octet is over 255.
    Values of any other form are for :func:`anonymise_ip` (see :func:`other_forms`).
    """
    is_quad = f"regexp_full_match({column}, '{_DOTTED_QUAD}')"
    anonymised = (f"CASE WHEN list_max(list_transform(string_split({column}, '.'), x -> x::INTEGER)) <= 255 "
                  f"THEN array_to_string(string_split({column}, '.')[1:3], '.') || '.0' END")
    return is_quad, anonymised


def other_forms(con: duckdb.DuckDBPyConnection, events_sql: str) -> pd.DataFrame:
    """The distinct ``ip`` values of ``events_sql`` that are not dotted quads (IPv6, white space
    around, anything else: few), anonymised by :func:`anonymise_ip`: columns ``ip`` and
    ``ip_anonymised`` (None when invalid)."""
    is_quad, _ = ipv4_sql("ip")
    values = [v for (v,) in con.execute(
        f"SELECT DISTINCT ip FROM ({events_sql}) WHERE ip IS NOT NULL AND NOT {is_quad}").fetchall()]
    return pd.DataFrame({"ip": pd.Series(values, dtype="object"),
                         "ip_anonymised": pd.Series([anonymise_ip(v) for v in values], dtype="object")})


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
    """Anonymise each distinct value of ``ips`` (strings or None), by the same SQL as the pipeline.

    Returns a DataFrame with columns ``ip`` (the distinct raw values), ``ip_anonymised`` (str or
    None) and ``ip_valid`` (bool), one row per distinct non-null raw value, sorted by ``ip``.
    """
    con = duckdb.connect()
    con.register("ips", pd.DataFrame({"ip": ips.astype("object")}))
    distinct = "SELECT DISTINCT ip FROM ips WHERE ip IS NOT NULL"
    con.register("others", other_forms(con, distinct))
    is_quad, anonymised = ipv4_sql("d.ip")
    frame = con.sql(f"SELECT d.ip, CASE WHEN {is_quad} THEN {anonymised} ELSE o.ip_anonymised END AS ip_anonymised "
                    f"FROM ({distinct}) d LEFT JOIN others o ON d.ip = o.ip ORDER BY d.ip").df()
    con.close()
    frame = frame.astype({"ip": "object", "ip_anonymised": "object"})
    frame["ip_anonymised"] = frame["ip_anonymised"].where(frame["ip_anonymised"].notna(), None)
    frame["ip_valid"] = frame["ip_anonymised"].notna()
    return frame
