"""Property: whatever the lines, every one of them ends in exactly one place, and nothing crashes."""

import json
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hipages_pipeline.lib.events.validation import REASON_CODES, ValidationSettings
from hipages_pipeline.lib.sql.scan import scan_window

ALL_TIME = (datetime(2000, 1, 1), datetime(2100, 1, 1))
SETTINGS = ValidationSettings(now=datetime(2026, 11, 30))

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
timestamps = st.one_of(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 1, 1)).map(lambda d: d.strftime("%d/%m/%Y %H:%M:%S")),
    st.text(max_size=25), scalars)
urls = st.one_of(st.sampled_from(["https://www.hipages.com.au/a/b", "hipages.com.au/x?y=1", "w3.hipages.com.au", "",
                                  "http://1.2.3.4/", "ftp://a.com/", "https://[::1", "localhost"]), st.text(max_size=30))
events = st.fixed_dictionaries(
    {},
    optional={"event_id": st.one_of(st.text(max_size=10), st.integers(), scalars),
              "user": st.one_of(st.fixed_dictionaries({}, optional={"id": scalars, "session_id": scalars, "ip": scalars}), scalars),
              "action": scalars, "url": urls, "timestamp": timestamps},
).map(json.dumps)
lines = st.one_of(events.map(str.encode), st.text(max_size=60).map(str.encode), st.binary(max_size=60)).map(
    lambda b: b.replace(b"\n", b" "))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(lines, max_size=25))
def test_every_line_is_accounted_for(tmp_path, generated):
    path = tmp_path / "fuzz.json"
    path.write_bytes(b"".join(line + b"\n" for line in generated))
    scan = scan_window([path], SETTINGS, *ALL_TIME)
    expected_lines = len(generated)
    assert scan.lines_read == expected_lines
    assert len(scan.events) + len(scan.rejects) + len(scan.unplaced) == expected_lines
    numbers = sorted([*scan.events["line_number"], *scan.rejects["line_number"], *scan.unplaced["line_number"]])
    assert numbers == list(range(1, expected_lines + 1))
    assert set(scan.rejects["reason"]) | set(scan.unplaced["reason"]) <= set(REASON_CODES)
    assert scan.rejects["message"].notna().all() and scan.unplaced["message"].notna().all()
    assert scan.events["time_stamp"].notna().all() and scan.events["user_id"].notna().all()
