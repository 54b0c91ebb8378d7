"""The ingest stage's quality gates are judged per hour: the same input gives the same verdict,
run hour by hour or as one ranged run; local times around daylight saving changes are flagged."""

import json
from pathlib import Path

from dagster import AssetCheckSeverity

from hipages_pipeline_tests.conftest import query_db, run_job

BAD_HOUR, CLEAN_HOUR = "2017-02-02-20:00", "2017-02-02-21:00"


def event(event_id: str, timestamp: str, **overrides) -> dict:
    base = {"event_id": event_id, "user": {"session_id": "1", "id": 7, "ip": "10.0.0.1"}, "action": "page_view",
            "url": "https://www.hipages.com.au/articles", "timestamp": timestamp}
    base.update(overrides)
    return base


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def share_check(result, hour: str):
    """The run's ``rejected_share_below_threshold`` evaluation of one hour (checks report per hour)."""
    (evaluation,) = [e for e in result.get_asset_check_evaluations()
                     if e.check_name == "rejected_share_below_threshold" and e.partition == hour]
    return evaluation


def test_rejected_share_is_judged_per_hour_whatever_the_batching(tmp_path):
    # 20:00 holds 20 lines, 2 rejected (10% > 5%); 21:00 holds 200 clean lines: 2 of 220 (0.9%) over both.
    bad_hour = [event(f"a{i}", "02/02/2017 20:22:00") for i in range(18)]
    bad_hour += [event("x", "02/02/2017 20:30:00", url=""), event("y", "02/02/2017 20:40:00", user="oops")]
    clean_hour = [event(f"b{i}", "02/02/2017 21:10:00") for i in range(200)]
    source = write_lines(tmp_path / "events.json", bad_hour + clean_hour)

    for first, last in [(BAD_HOUR, CLEAN_HOUR), (BAD_HOUR, BAD_HOUR)]:
        result = run_job(source, tmp_path / f"out_{first[-5:-3]}_{last[-5:-3]}", first, last)
        check = share_check(result, BAD_HOUR)
        assert not result.success and not check.passed, (first, last)
        assert BAD_HOUR in check.description and "10.00%" in check.description, check.description
        assert CLEAN_HOUR not in check.description
        assert check.metadata["hours_over_threshold"].value == {BAD_HOUR: 0.1}
        assert check.metadata["rejected_share"].value == 0.1  # the worst hour's share

    # In the ranged run the clean hour gets its own verdict, the one it gets alone: passed, 0 of 200.
    in_range = share_check(run_job(source, tmp_path / "out_range2", BAD_HOUR, CLEAN_HOUR), CLEAN_HOUR)
    clean = run_job(source, tmp_path / "out_clean", CLEAN_HOUR)
    alone = share_check(clean, CLEAN_HOUR)
    assert clean.success
    for check in (in_range, alone):
        assert check.passed and check.metadata["rejected_share"].value == 0.0
        assert check.metadata["hours_over_threshold"].value == {}
    assert "0 of 200 lines rejected" in alone.description and alone.description == in_range.description


def test_daylight_saving_local_times_in_a_run(tmp_path):
    # Sydney, 2 April 2017: 02:00..03:00 happens twice (AEDT then AEST); 1 October: 02:00..03:00 never.
    lines = [event(f"e{i}", f"02/04/2017 02:{10 * i:02d}:00") for i in range(3)]   # ambiguous: 15:xx UTC
    lines += [event(f"f{i}", f"02/04/2017 01:{10 * i:02d}:00") for i in range(3)]  # 14:xx UTC
    lines += [event(f"g{i}", f"02/04/2017 03:{10 * i:02d}:00") for i in range(3)]  # 17:xx UTC
    lines.append(event("n", "01/10/2017 02:30:00"))  # does not exist
    source = write_lines(tmp_path / "sydney.json", lines)
    out = tmp_path / "out"
    result = run_job(source, out, "2017-04-01-14:00", "2017-04-01-17:00", timezone="Australia/Sydney")
    assert result.success
    by_hour = {e.partition: e for e in result.get_asset_check_evaluations() if e.check_name == "ambiguous_local_times"}
    assert sorted(by_hour) == ["2017-04-01-14:00", "2017-04-01-15:00", "2017-04-01-16:00", "2017-04-01-17:00"]
    assert [hour for hour, e in sorted(by_hour.items()) if not e.passed] == ["2017-04-01-15:00"]
    ambiguous = by_hour["2017-04-01-15:00"]
    assert ambiguous.severity == AssetCheckSeverity.WARN
    assert ambiguous.metadata["ambiguous_lines"].value == 3
    assert ambiguous.metadata["hours"].value == {"2017-04-01-15:00": 3}
    assert "2017-04-01-15:00" in ambiguous.description
    hours = query_db(out, "SELECT strftime(time_stamp, '%H') AS h, count(*) AS n FROM {s}.raw_events GROUP BY 1 ORDER BY 1")
    assert hours.values.tolist() == [["14", 3], ["15", 3], ["17", 3]]
    unplaced = query_db(out, "SELECT reason, field, message FROM {s}.rejected_without_hour").values.tolist()
    assert unplaced == [["nonexistent_local_time", "timestamp",
                         "timestamp 01/10/2017 02:30:00 does not exist in time zone Australia/Sydney (the clocks skip it)"]]
