"""Hostile input: every class of bad line ends in the quarantine with the exact reason, or is read."""

import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from hipages_pipeline.lib.events.reader import SourceReadError
from hipages_pipeline.lib.events.validation import RAW_LINE_LIMIT, ValidationSettings, new_connection
from hipages_pipeline.lib.sql.scan import WindowScanner, scan_unplaced, scan_window

ALL_TIME = (datetime(2000, 1, 1), datetime(2100, 1, 1))
SETTINGS = ValidationSettings(now=datetime(2026, 11, 30))


def event(**overrides) -> dict:
    base = {"event_id": "1", "user": {"session_id": "9", "id": 56456, "ip": "1.2.3.4"},
            "action": "page_view", "url": "https://www.hipages.com.au/articles", "timestamp": "02/02/2017 20:22:00"}
    base.update(overrides)
    return base


def scan_bytes(tmp_path: Path, content: bytes, name: str = "events.json", settings=SETTINGS):
    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    return scan_window([path], settings, *ALL_TIME)


def only_reject(scan) -> dict:
    rows = scan.rejects.to_dict("records") + scan.unplaced.to_dict("records")
    assert len(rows) == 1 and scan.events.empty
    return rows[0]


@pytest.mark.parametrize(("line", "reason", "field", "message", "placed"), [
    ('"id" : 56a56', "invalid_json", None, 'the line is not valid JSON: "id" : 56a56', False),
    ("[1, 2]", "not_an_object", None, "the line is a JSON ARRAY, not an object", False),
    ('"just a string"', "not_an_object", None, "the line is a JSON VARCHAR, not an object", False),
    ("42", "not_an_object", None, "the line is a JSON UBIGINT, not an object", False),
    ("null", "not_an_object", None, "the line is a JSON NULL, not an object", False),
    (json.dumps(event(timestamp=None)), "missing_field", "timestamp", "field timestamp is missing or null", False),
    (json.dumps({k: v for k, v in event().items() if k != "timestamp"}), "missing_field", "timestamp",
     "field timestamp is missing or null", False),
    (json.dumps(event(timestamp=1486066920)), "wrong_type", "timestamp",
     "field timestamp is ubigint, expected a string: 1486066920", False),
    (json.dumps(event(timestamp="31/02/2017 20:22:00")), "bad_timestamp", "timestamp",
     "timestamp 31/02/2017 20:22:00 is not a real date in DD/MM/YYYY HH:MM:SS form", False),
    (json.dumps(event(timestamp="2017-02-02T20:22:00")), "bad_timestamp", "timestamp",
     "timestamp 2017-02-02T20:22:00 is not a real date in DD/MM/YYYY HH:MM:SS form", False),
    (json.dumps(event(timestamp="02/02/1999 20:22:00")), "timestamp_out_of_range", "timestamp",
     "timestamp 02/02/1999 20:22:00 (UTC 1999-02-02 20:22:00) is outside 2017-01-01 00:00:00 .. 2026-12-01 00:00:00",
     False),
    (json.dumps(event(event_id=None)), "missing_field", "event_id", "field event_id is missing or null", True),
    (json.dumps(event(event_id="  ")), "missing_field", "event_id", "field event_id is empty", True),
    (json.dumps(event(event_id={"a": 1})), "wrong_type", "event_id",
     'field event_id is object, expected a string or an integer: {"a":1}', True),
    (json.dumps(event(user="56456")), "wrong_type", "user", 'field user is varchar, expected an object: "56456"', True),
    (json.dumps(event(user=None)), "missing_field", "user", "field user is missing or null", True),
    (json.dumps(event(user={"session_id": "9"})), "missing_field", "user.id", "field user.id is missing or null", True),
    (json.dumps(event(user={"id": 1.5})), "wrong_type", "user.id",
     "field user.id is double, expected a string or an integer: 1.5", True),
    (json.dumps(event(user={"id": 1, "ip": 1234})), "wrong_type", "user.ip",
     "field user.ip is ubigint, expected a string or null: 1234", True),
    (json.dumps(event(action=None)), "missing_field", "action", "field action is missing or null", True),
    (json.dumps(event(action=["a"])), "wrong_type", "action", 'field action is array, expected a string: ["a"]', True),
    (json.dumps(event(url=None)), "missing_field", "url", "field url is missing or null", True),
    (json.dumps(event(url="")), "bad_url", "url", "url is empty", True),
    (json.dumps(event(url="https://")), "bad_url", "url", "url 'https://' has no host", True),
    (json.dumps(event(url="ftp://x.com/a")), "bad_url", "url", "url 'ftp://x.com/a' has scheme 'ftp', expected http or https", True),
    ("", "blank_line", None, "the line is blank", False),
    ("   \t", "blank_line", None, "the line is blank", False),
])
def test_bad_line_is_quarantined_with_reason(tmp_path, line, reason, field, message, placed):
    scan = scan_bytes(tmp_path, (line + "\n").encode())
    row = only_reject(scan)
    assert (row["reason"], row["field"], row["message"]) == (reason, field, message)
    assert (row["source_file"], row["line_number"], row["raw_line"]) == (str(tmp_path / "events.json"), 1, line)
    assert (len(scan.rejects), len(scan.unplaced)) == ((1, 0) if placed else (0, 1))
    assert scan.lines_read == 1


def test_light_pass_finds_the_same_lines_without_hour_and_the_hours(tmp_path):
    """rejected_without_hour's light pass (line and timestamp only) must give exactly the unplaced
    rows of the full check, and the hours of every other line, bad URLs included."""
    lines = [json.dumps(event()), '"id" : 56a56', "[1, 2]", "", json.dumps(event(url="ftp://x.com/a")),
             json.dumps(event(timestamp="31/02/2017 10:00:00")), json.dumps(event(timestamp=20170202)),
             json.dumps(event(timestamp="01/01/2016 10:00:00")), json.dumps(event(user="me", timestamp="03/02/2017 01:00:00")),
             json.dumps({"timestamp": "02/02/2017 20:59:59"})]
    path = tmp_path / "events.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    full = scan_window([path], SETTINGS, *ALL_TIME)
    unplaced, hours, lines_read = scan_unplaced([path], SETTINGS)
    columns = ["line_number", "reason", "field", "message"]
    light = unplaced.to_pandas().sort_values("line_number")
    assert light[columns].to_dict("records") == full.unplaced.sort_values("line_number")[columns].to_dict("records")
    assert light["line_number"].tolist() == [2, 3, 4, 6, 7, 8]
    assert lines_read == len(lines)
    assert list(zip(hours["hour"].astype(str), hours["lines"])) == [
        ("2017-02-02 20:00:00", 3), ("2017-02-03 01:00:00", 1)]


def test_missing_and_null_optional_fields_are_accepted(tmp_path):
    lines = [event(user={"id": "u1"}), event(event_id="2", user={"id": "u2", "session_id": None, "ip": None})]
    scan = scan_bytes(tmp_path, "\n".join(json.dumps(e) for e in lines).encode())
    assert scan.rejects.empty and scan.unplaced.empty
    assert scan.events[["user_id", "session_id", "ip"]].to_dict("records") == [
        {"user_id": "u1", "session_id": None, "ip": None}, {"user_id": "u2", "session_id": None, "ip": None}]


def test_crlf_bom_and_integer_ids(tmp_path):
    content = b"\xef\xbb\xbf" + json.dumps(event(event_id=7)).encode() + b"\r\n" + json.dumps(event(event_id="8")).encode() + b"\r\n"
    scan = scan_bytes(tmp_path, content)
    assert scan.events["event_id"].tolist() == ["7", "8"]
    assert scan.events["line_number"].tolist() == [1, 2]
    assert scan.events["user_id"].tolist() == ["56456", "56456"]
    assert scan.lines_read == 2 and scan.rejects.empty


def test_non_utf8_bytes_are_quarantined_and_neighbours_kept(tmp_path):
    good = json.dumps(event()).encode()
    scan = scan_bytes(tmp_path, good + b"\n\xff\xfe broken \xc3\n" + good.replace(b'"1"', b'"2"') + b"\n")
    row = only_reject(type(scan)(scan.events.iloc[0:0], scan.rejects, scan.unplaced, 3, 0))
    assert (row["reason"], row["line_number"], row["raw_line"]) == ("invalid_encoding", 2, "\ufffd\ufffd broken \ufffd")
    assert scan.events["line_number"].tolist() == [1, 3]


def test_ten_megabyte_line(tmp_path):
    huge = json.dumps(event(url="https://www.hipages.com.au/" + "a" * 10_000_000))
    scan = scan_bytes(tmp_path, huge.encode() + b"\n" + json.dumps(event(event_id="2")).encode())
    row = only_reject(type(scan)(scan.events.iloc[0:0], scan.rejects, scan.unplaced, 2, 0))
    assert row["reason"] == "line_too_long"
    assert row["raw_bytes"] == len(huge) and len(row["raw_line"]) == RAW_LINE_LIMIT
    assert row["message"] == f"the line has {len(huge)} bytes, more than the limit of 1048576"
    assert scan.events["event_id"].tolist() == ["2"]


def test_empty_file(tmp_path):
    scan = scan_bytes(tmp_path, b"")
    assert scan.lines_read == 0 and scan.events.empty and scan.rejects.empty and scan.unplaced.empty


def test_pretty_printed_json_array_is_rejected_with_a_clear_message(tmp_path):
    content = json.dumps([event(), event(event_id="2")], indent=2).encode()
    scan = scan_bytes(tmp_path, content)
    assert scan.events.empty and scan.lines_read == content.count(b"\n") + 1
    assert len(scan.unplaced) == scan.lines_read
    first = scan.unplaced.iloc[0]
    assert first["reason"] == "invalid_json"
    assert "looks like one JSON array document" in first["message"]


def test_gzip_input(tmp_path):
    scan = scan_bytes(tmp_path, (json.dumps(event()) + "\n" + "oops\n").encode(), name="events.json.gz")
    assert scan.events["event_id"].tolist() == ["1"] and scan.unplaced["reason"].tolist() == ["invalid_json"]


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.json.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(SourceReadError, match="cannot read source file .*broken.json.gz"):
        scan_window([path], SETTINGS, *ALL_TIME)


def test_source_timezone_converts_to_utc(tmp_path):
    content = json.dumps(event(timestamp="02/02/2017 20:22:00")).encode()
    sydney = ValidationSettings(source_timezone="Australia/Sydney", now=datetime(2026, 11, 30))
    scan = scan_bytes(tmp_path, content, settings=sydney)
    # 20:22 AEDT (UTC+11 in February) is 09:22 UTC.
    assert scan.events["time_stamp"].tolist() == [datetime(2017, 2, 2, 9, 22)]


SYDNEY = ValidationSettings(source_timezone="Australia/Sydney", now=datetime(2026, 11, 30))


def zoneinfo_utc(local: str, zone: str) -> datetime | None:
    """Python's reading of a local time (fold=0: the earlier instant of an ambiguous time), naive
    UTC; None when the local time does not exist in the zone (it does not survive the round trip)."""
    from zoneinfo import ZoneInfo

    naive = datetime.strptime(local, "%d/%m/%Y %H:%M:%S")
    aware = naive.replace(tzinfo=ZoneInfo(zone))
    utc = aware.astimezone(timezone.utc)
    if utc.astimezone(ZoneInfo(zone)).replace(tzinfo=None) != naive:
        return None
    return utc.replace(tzinfo=None)


def test_duckdb_timezone_behaviour_we_rely_on():
    """DuckDB (ICU) alone reads an ambiguous local time as the LATER instant and a nonexistent one
    as if it were an hour later; the rules detect both by converting back and an hour apart."""
    con = new_connection()
    to_utc = "timezone('UTC', timezone('Australia/Sydney', $t::TIMESTAMP))"
    back = f"timezone('Australia/Sydney', timezone('UTC', {to_utc}))"
    rows = {t: con.execute(f"SELECT {to_utc}, {back}", {"t": t}).fetchone() for t in
            ["2017-04-02 02:30:00", "2017-10-01 02:30:00", "2017-10-01 03:30:00", "2017-02-02 20:22:00"]}
    assert rows == {
        "2017-04-02 02:30:00": (datetime(2017, 4, 1, 16, 30), datetime(2017, 4, 2, 2, 30)),  # later (AEST)
        "2017-10-01 02:30:00": (datetime(2017, 9, 30, 16, 30), datetime(2017, 10, 1, 3, 30)),  # moved on
        "2017-10-01 03:30:00": (datetime(2017, 9, 30, 16, 30), datetime(2017, 10, 1, 3, 30)),
        "2017-02-02 20:22:00": (datetime(2017, 2, 2, 9, 22), datetime(2017, 2, 2, 20, 22)),
    }


@pytest.mark.parametrize(("local", "expected"), [
    ("02/04/2017 01:30:00", datetime(2017, 4, 1, 14, 30)),
    ("02/04/2017 02:00:00", datetime(2017, 4, 1, 15, 0)),   # ambiguous: the earlier instant (AEDT, +11)
    ("02/04/2017 02:30:00", datetime(2017, 4, 1, 15, 30)),  # ambiguous
    ("02/04/2017 02:59:59", datetime(2017, 4, 1, 15, 59, 59)),  # ambiguous
    ("02/04/2017 03:00:00", datetime(2017, 4, 1, 17, 0)),
    ("01/10/2017 01:59:59", datetime(2017, 9, 30, 15, 59, 59)),
    ("01/10/2017 02:00:00", None),  # does not exist: clocks jump from 02:00 to 03:00
    ("01/10/2017 02:30:00", None),
    ("01/10/2017 03:00:00", datetime(2017, 9, 30, 16, 0)),
    ("01/10/2017 03:30:00", datetime(2017, 9, 30, 16, 30)),
    ("02/02/2017 20:22:00", datetime(2017, 2, 2, 9, 22)),
])
def test_daylight_saving_local_times_agree_with_zoneinfo(tmp_path, local, expected):
    assert zoneinfo_utc(local, "Australia/Sydney") == expected
    scan = scan_bytes(tmp_path, json.dumps(event(timestamp=local)).encode(), settings=SYDNEY)
    if expected is None:
        row = only_reject(scan)
        assert (row["reason"], row["field"]) == ("nonexistent_local_time", "timestamp")
        assert pd.isna(row["time_stamp"])
        assert row["message"] == (f"timestamp {local} does not exist in time zone Australia/Sydney "
                                  "(the clocks skip it)")
        assert len(scan.unplaced) == 1  # no real instant, so no hour
    else:
        assert scan.rejects.empty and scan.unplaced.empty
        assert scan.events["time_stamp"].tolist() == [expected]


def test_ambiguous_local_times_are_counted_per_hour(tmp_path):
    lines = [event(event_id=str(i), timestamp=t) for i, t in enumerate(
        ["02/04/2017 02:30:00", "02/04/2017 02:10:00", "02/04/2017 03:30:00", "01/10/2017 02:30:00"])]
    path = tmp_path / "e.json"
    path.write_text("\n".join(json.dumps(e) for e in lines))
    scanner = WindowScanner([path], SYDNEY, *ALL_TIME)
    events = pa.Table.from_batches(list(scanner.events()))
    assert events["time_stamp"].to_pylist() == [datetime(2017, 4, 1, 15, 30), datetime(2017, 4, 1, 15, 10),
                                                datetime(2017, 4, 1, 17, 30)]
    assert scanner.ambiguous_per_hour == {datetime(2017, 4, 1, 15): 2}
    assert scanner.lines_per_hour == {datetime(2017, 4, 1, 15): 2, datetime(2017, 4, 1, 17): 1}


def test_utc_source_is_not_shifted_by_the_daylight_saving_rules(tmp_path):
    lines = [event(event_id=str(i), timestamp=t) for i, t in enumerate(["02/04/2017 02:30:00", "01/10/2017 02:30:00"])]
    scan = scan_bytes(tmp_path, "\n".join(json.dumps(e) for e in lines).encode())
    assert scan.rejects.empty and scan.unplaced.empty
    assert scan.events["time_stamp"].tolist() == [datetime(2017, 4, 2, 2, 30), datetime(2017, 10, 1, 2, 30)]


def test_day_first_dates(tmp_path):
    lines = [event(event_id=str(i), timestamp=t) for i, t in enumerate(["02/04/2017 20:00:00", "04/02/2017 20:00:00", "01/03/2017 20:21:00"])]
    scan = scan_bytes(tmp_path, "\n".join(json.dumps(e) for e in lines).encode())
    assert scan.events["time_stamp"].tolist() == [datetime(2017, 4, 2, 20), datetime(2017, 2, 4, 20), datetime(2017, 3, 1, 20, 21)]


def test_window_keeps_only_its_hour(tmp_path):
    lines = [event(event_id="a", timestamp="02/02/2017 19:59:59"), event(event_id="b", timestamp="02/02/2017 20:00:00"),
             event(event_id="c", timestamp="02/02/2017 20:59:59"), event(event_id="d", timestamp="02/02/2017 21:00:00"),
             event(event_id="e", timestamp="02/02/2017 20:30:00", url="")]
    path = tmp_path / "e.json"
    path.write_text("\n".join(json.dumps(e) for e in lines))
    scan = scan_window([path], SETTINGS, datetime(2017, 2, 2, 20), datetime(2017, 2, 2, 21))
    assert scan.events["event_id"].tolist() == ["b", "c"]
    assert scan.rejects["line_number"].tolist() == [5]
    assert (scan.lines_read, scan.lines_in_window) == (5, 3)


def test_gzip_data_in_a_plain_json_file_gets_a_hint(tmp_path):
    scan = scan_bytes(tmp_path, gzip.compress(json.dumps(event()).encode()), name="events.json")
    first = scan.unplaced.iloc[0]
    assert first["reason"] == "invalid_encoding"
    assert first["message"] == "the line is not valid UTF-8 (the file looks gzip-compressed: name it *.gz)"


# --------------------------------------------------------------------------- the reader, against bytes.split

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hipages_pipeline.lib.events.reader import iter_line_batches  # noqa: E402


def expected_lines(content: bytes) -> list[tuple[str | None, str | None]]:
    """The reader's contract, computed the plain way: BOM dropped, split on \\n only, no empty
    last line after a final \\n, each line decoded or marked invalid_encoding."""
    if content.startswith(b"\xef\xbb\xbf"):
        content = content[3:]
    if not content:
        return []
    parts = content.split(b"\n")
    if content.endswith(b"\n"):
        parts.pop()
    out = []
    for part in parts:
        try:
            out.append((part.decode("utf-8"), None))
        except UnicodeDecodeError:
            out.append((None, "invalid_encoding"))
    return out


@settings(max_examples=150, deadline=None)
@given(content=st.lists(st.sampled_from([b"a", b"\n", b"\r", b"\r\n", b"\xc3\xa9", b"\xff", b"\xef\xbb\xbf", b"{}", b" "]),
                        max_size=40).map(b"".join),
       chunk_bytes=st.sampled_from([1, 3, 16, 1 << 20]))
def test_reader_splits_like_bytes_split(tmp_path_factory, content, chunk_bytes):
    path = tmp_path_factory.mktemp("reader") / "lines.json"
    path.write_bytes(content)
    got = []
    for batch in iter_line_batches([path], chunk_bytes):
        got += list(zip(batch["line"].to_pylist(), batch["read_error"].to_pylist()))
        assert batch["line_number"].to_pylist() == list(range(len(got) - batch.num_rows + 1, len(got) + 1))
    assert got == expected_lines(content)


def test_the_timestamp_rules_come_before_the_other_fields(tmp_path):
    """The order the contract states: no event_id and an unparseable timestamp is bad_timestamp;
    no event_id with a good timestamp is missing_field (event_id)."""
    rest = '"user": {"id": 1, "session_id": "s", "ip": "1.2.3.4"}, "action": "page_view", "url": "https://www.hipages.com.au/a"'
    path = tmp_path / "two.json"
    path.write_text(f'{{{rest}, "timestamp": "32/13/2017 20:00:00"}}\n{{{rest}, "timestamp": "02/02/2017 20:00:00"}}\n')
    scan = scan_window([path], ValidationSettings(now=datetime(2026, 1, 1)), datetime(2000, 1, 1), datetime(2100, 1, 1))
    reasons = sorted(zip(scan.unplaced["line_number"].tolist() + scan.rejects["line_number"].tolist(),
                         scan.unplaced["reason"].tolist() + scan.rejects["reason"].tolist()))
    assert reasons == [(1, "bad_timestamp"), (2, "missing_field")]
    assert scan.rejects["field"].tolist() == ["event_id"]
