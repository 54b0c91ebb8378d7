"""Corrupt lines for the generator: a valid event line damaged the way production data is
(each kind is one the data contract quarantines, with the reason code in brackets below)."""

from __future__ import annotations

CORRUPT_KINDS = ("id_56a56", "truncated", "blank", "not_an_object", "null_action", "missing_url",
                 "numeric_url", "bad_timestamp", "ftp_url")
"""Kinds of corrupt line; each is used for ``corrupt_lines // 9`` or one more of the corrupt lines."""


def corrupt_line(line: str, kind: str) -> str:
    """Damage a valid event line (without its line ending) the way ``kind`` says.

    See :data:`CORRUPT_KINDS`; every result is a line the data contract quarantines.
    """
    if kind == "id_56a56":  # the real corruption: a letter inside the integer user.id
        head, rest = line.split('"id" : ', 1)
        digits, tail = rest.split(" ", 1)
        middle = max(1, len(digits) // 2)
        return f'{head}"id" : {digits[:middle]}a{digits[middle:]} {tail}'
    if kind == "truncated":  # cut short, as a receiver killed mid-write leaves it
        return line[: len(line) * 2 // 3]
    if kind == "blank":
        return ""
    if kind == "not_an_object":
        return f"[{line}]"
    if kind == "null_action":
        head, rest = line.split('"action" : "', 1)
        return f'{head}"action" : null{rest[rest.index(chr(34)) + 1:]}'
    if kind == "missing_url":
        head, rest = line.split(', "url" : "', 1)
        return head + rest[rest.index('"') + 1:]
    if kind == "numeric_url":
        head, rest = line.split('"url" : "', 1)
        return f'{head}"url" : 12345{rest[rest.index(chr(34)) + 1:]}'
    if kind == "bad_timestamp":  # 31 February
        head, rest = line.split('"timestamp" : "', 1)
        return f'{head}"timestamp" : "31/02/2017{rest[10:]}'
    if kind == "ftp_url":
        head, rest = line.split('"url" : "', 1)
        path = rest.split("/", 3)[-1] if rest.startswith("http") else rest.split("/", 1)[-1]
        return f'{head}"url" : "ftp://files.hipages.com.au/{path}'
    raise ValueError(f"unknown corrupt kind {kind!r}")
