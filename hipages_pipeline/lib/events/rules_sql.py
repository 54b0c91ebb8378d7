"""The validation rules as SQL: one statement classifies a batch of numbered lines.

Each rule is a failing condition with its reason code, the field at fault and the message; the
first rule that fails wins: the line, then ``timestamp``, then the other fields, then the URL
(see ``REASON_CODES`` in the contract). Used by
:mod:`hipages_pipeline.lib.events.validation`, which runs it on each batch.
"""

from __future__ import annotations

from hipages_pipeline.lib.contract import RAW_LINE_LIMIT, SOURCE_TIMESTAMP_FORMAT

# Two JSON parses per line: json_type with a list of paths gives the JSON types of the root and
# of the fields (tp[1] = root, t1..t8 = tp[2..9]) and json_extract_string with the same paths their
# unquoted values (v1..v8); every rule reads those columns, and the first failing rule's number
# picks reason, field and message. Messages and raw lines are built for rejected lines only.
_FIELDS = ["timestamp", "event_id", "user", "user.id", "user.session_id", "user.ip", "action", "url"]
_ID_TYPES = ("('VARCHAR', 'BIGINT', 'UBIGINT')", "a string or an integer")
_STRING = ("('VARCHAR')", "a string")
Rule = tuple[str, str, str, str]  # (failing condition, reason, field, message expression)


def _raw(i: int) -> str:
    """The JSON text of field i (for messages: computed on rejected lines only)."""
    return f"left(json_extract(text, '$.{_FIELDS[i - 1]}')::VARCHAR, 200)"


def _required(i: int, name: str, types: tuple[str, str]) -> list[Rule]:
    """Rules for a required scalar field: present, not null, of the right type, not empty."""
    sql_types, label = types
    return [
        (f"t{i} IS NULL OR t{i} = 'NULL'", "missing_field", name, f"'field {name} is missing or null'"),
        (f"t{i} NOT IN {sql_types}", "wrong_type", name,
         f"format('field {name} is {{}}, expected {label}: {{}}', lower(t{i}), {_raw(i)})"),
        (f"trim(v{i}) = ''", "missing_field", name, f"'field {name} is empty'"),
    ]


def _optional(i: int, name: str, types: tuple[str, str]) -> list[Rule]:
    """Rules for an optional field: it may be absent or null, but when present it has the right type."""
    sql_types, label = types
    return [(f"t{i} <> 'NULL' AND t{i} NOT IN {sql_types}", "wrong_type", name,
             f"format('field {name} is {{}}, expected {label} or null: {{}}', lower(t{i}), {_raw(i)})")]


_TIME_RULES: list[Rule] = [
    *_required(1, "timestamp", _STRING),
    ("ts_local IS NULL", "bad_timestamp", "timestamp",
     "format('timestamp {} is not a real date in DD/MM/YYYY HH:MM:SS form', v1)"),
    ("nonexistent", "nonexistent_local_time", "timestamp",
     "format('timestamp {} does not exist in time zone {} (the clocks skip it)', v1, $tz)"),
    ("ts_utc < $earliest OR ts_utc > $latest", "timestamp_out_of_range", "timestamp",
     "format('timestamp {} (UTC {}) is outside {} .. {}', v1, ts_utc, $earliest, $latest)"),
]
_FIELD_RULES: list[Rule] = [
    *_required(2, "event_id", _ID_TYPES),
    ("t3 IS NULL OR t3 = 'NULL'", "missing_field", "user", "'field user is missing or null'"),
    ("t3 <> 'OBJECT'", "wrong_type", "user", f"format('field user is {{}}, expected an object: {{}}', lower(t3), {_raw(3)})"),
    *_required(4, "user.id", _ID_TYPES),
    *_optional(5, "user.session_id", _ID_TYPES),
    *_optional(6, "user.ip", _STRING),
    *_required(7, "action", _STRING),
    ("t8 IS NULL OR t8 = 'NULL'", "missing_field", "url", "'field url is missing or null'"),
    ("t8 <> 'VARCHAR'", "wrong_type", "url", f"format('field url is {{}}, expected a string: {{}}', lower(t8), {_raw(8)})"),
]


def _literal_list(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


_EVENT_COLUMNS_SQL = """
    v2 AS event_id,
    v4 AS user_id,
    CASE WHEN t5 <> 'NULL' THEN v5 END AS session_id,
    CASE WHEN t6 <> 'NULL' THEN v6 END AS ip,
    v7 AS action,
    v8 AS url,"""
"""The typed event columns of a fully checked line (read from the parsed values v2..v8)."""

# Local time -> UTC. The session time zone is UTC, so a UTC source needs no conversion. Elsewhere
# DuckDB (ICU) reads an ambiguous local time (clocks set back: it happens twice) as the LATER
# instant and a nonexistent one (clocks set forward: it never happens) as if the clocks had not
# moved yet (01/10/2017 02:30 in Sydney becomes 03:30); test_validation checks both. So:
# - nonexistent: the instant DuckDB found does not read back as the same local time;
# - the earlier instant: the local time minus the offset in force an hour before DuckDB's instant
#   (before a change of at most an hour); the time is ambiguous when that instant is earlier and
#   reads back as the same local time. It is then the instant kept, as Python's zoneinfo does
#   (fold=0); the line is counted (ambiguous_local_times).
# A nonexistent time has no instant (ts_utc NULL): it is quarantined, in no hour.
_ICU_UTC_SQL = "timezone('UTC', timezone($tz, ts_local))"


def _local(utc: str) -> str:
    """The local wall time, in zone $tz, of the naive UTC instant ``utc``."""
    return f"timezone($tz, timezone('UTC', {utc}))"


_LOCAL_TIMES_SQL = f"""CASE WHEN $tz = 'UTC' THEN ts_local ELSE {_ICU_UTC_SQL} END AS ts_icu,
        CASE WHEN $tz = 'UTC' THEN ts_local
            ELSE ts_local - ({_local("ts_icu - INTERVAL 1 HOUR")} - (ts_icu - INTERVAL 1 HOUR)) END AS ts_earlier,
        $tz <> 'UTC' AND {_local("ts_icu")} <> ts_local AS nonexistent,
        $tz <> 'UTC' AND NOT nonexistent AND ts_earlier < ts_icu AND {_local("ts_earlier")} = ts_local AS ambiguous"""
_TO_UTC_SQL = "CASE WHEN nonexistent THEN NULL WHEN ambiguous THEN ts_earlier ELSE ts_icu END"


def _judged_sql(fields: list[str], rules: list[Rule]) -> str:
    """The CTEs up to ``judged``: each line framed, parsed into t1.., v1.., timed and given the
    number of its first failing rule (``rule_no``)."""
    paths = [f"$.{f}" for f in fields]
    types = ", ".join(f"tp[{i + 1}] AS t{i}, vs[{i}] AS v{i}" for i in range(1, len(fields) + 1))
    rule_no = "CASE " + " ".join(f"WHEN {rule[0]} THEN {n}" for n, rule in enumerate(rules, start=1)) + " END"
    return f"""
WITH lines AS (
    SELECT source_file, line_number, read_error, raw_excerpt,
        CASE WHEN ends_with(line, chr(13)) THEN rtrim(line, chr(13)) ELSE line END AS text
    FROM batch
), framed AS (
    SELECT *,
        CASE
            WHEN read_error IS NOT NULL THEN read_error
            WHEN strlen(text) > $max_line_bytes THEN 'line_too_long'
            WHEN regexp_full_match(text, '\\s*') THEN 'blank_line'
            WHEN NOT json_valid(text) THEN 'invalid_json'
        END AS framing_reason
    FROM lines
), parsed AS (
    SELECT *,
        CASE WHEN framing_reason IS NULL THEN json_type(text, {['$', *paths]!r}) END AS tp,
        CASE WHEN framing_reason IS NULL AND tp[1] = 'OBJECT' THEN json_extract_string(text, {paths!r}) END AS vs
    FROM framed
), typed AS (
    SELECT *, coalesce(framing_reason, CASE WHEN tp[1] <> 'OBJECT' THEN 'not_an_object' END) AS line_reason,
        {types}
    FROM parsed
), times AS (
    SELECT *, try_strptime(CASE WHEN t1 = 'VARCHAR' THEN trim(v1) END, '{SOURCE_TIMESTAMP_FORMAT}') AS ts_local FROM typed
), local_times AS (
    SELECT *, {_LOCAL_TIMES_SQL} FROM times
), utc AS (
    SELECT *, {_TO_UTC_SQL} AS ts_utc FROM local_times
), judged AS (
    SELECT *, CASE WHEN line_reason IS NULL THEN {rule_no} END AS rule_no FROM utc
)
"""


def _verdict_sql(rules: list[Rule], event_columns: str) -> str:
    """The final SELECT over ``judged``: the event columns, then reason, field, message and the raw
    line (the last three for rejected lines only)."""
    message = "CASE rule_no " + " ".join(f"WHEN {n} THEN {rule[3]}" for n, rule in enumerate(rules, start=1)) + " END"
    return f"""SELECT
    source_file,
    line_number,{event_columns}
    v1 AS timestamp_text,
    ts_utc AS time_stamp,
    coalesce(ambiguous, false) AS ambiguous_time,
    coalesce(line_reason, {_literal_list([r[1] for r in rules])}[rule_no]) AS reason,
    {_literal_list([r[2] for r in rules])}[rule_no] AS field,
    CASE line_reason
        WHEN 'invalid_encoding' THEN CASE WHEN line_number = 1 AND starts_with(raw_excerpt, chr(31) || chr(65533))
            THEN 'the line is not valid UTF-8 (the file looks gzip-compressed: name it *.gz)'
            ELSE 'the line is not valid UTF-8' END
        WHEN 'line_too_long' THEN format('the line has {{}} bytes, more than the limit of {{}}', strlen(text), $max_line_bytes)
        WHEN 'blank_line' THEN 'the line is blank'
        WHEN 'invalid_json' THEN CASE WHEN trim(text) = '[' AND line_number = 1
            THEN 'the line is not valid JSON: [ (the file looks like one JSON array document; the source must be JSON Lines, one event object per line)'
            ELSE format('the line is not valid JSON: {{}}', left(text, 80)) END
        WHEN 'not_an_object' THEN format('the line is a JSON {{}}, not an object', tp[1])
        ELSE {message}
    END AS message,
    CASE WHEN line_reason IS NOT NULL OR rule_no IS NOT NULL
        THEN left(coalesce(text, raw_excerpt), {RAW_LINE_LIMIT}) END AS raw_line,
    CASE WHEN line_reason IS NOT NULL OR rule_no IS NOT NULL THEN coalesce(strlen(text), strlen(raw_excerpt)) END AS raw_bytes
FROM judged
"""


def _classify_sql(full: bool) -> str:
    """The SQL that classifies a batch. ``full`` checks every field and returns the typed event
    columns; otherwise only the line and its timestamp are judged (enough to know its hour)."""
    rules = _TIME_RULES + (_FIELD_RULES if full else [])
    fields = _FIELDS if full else _FIELDS[:1]
    return _judged_sql(fields, rules) + _verdict_sql(rules, _EVENT_COLUMNS_SQL if full else "")


CLASSIFY_SQL = _classify_sql(full=True)
"""Classifies a batch: every rule, and the typed event columns."""
TIME_ONLY_SQL = _classify_sql(full=False)
"""Classifies a batch by the line and its timestamp only (enough to know its hour)."""
