"""The event generator: deterministic, the sample's exact line format, the sample's anomalies,
corrupt lines at the given rate; and the three benchmark implementations agree on its output."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest

from benchmarks import duckdb_sql, reference
from benchmarks.harness import compare_outputs
from hipages_pipeline.cli import main as cli_main
from hipages_pipeline.cli.runner import run_pipeline
from hipages_pipeline.defs.resources import EventSource
from hipages_pipeline.lib.events.validation import (
    ValidationSettings,
    iter_classified,
    new_connection,
)
from hipages_pipeline.lib.generator import (
    CORRUPT_KINDS,
    GeneratorSpec,
    corrupt_line,
    generate,
)

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT / "data" / "source_event_data.json"
# The sample's line, field by field: key order, spaces, user.id an integer followed by " ,".
LINE = re.compile(
    r'\{ "event_id" : "(?P<event_id>\d+)", "user" : \{ "session_id" : "(?P<session_id>\d+)", '
    r'"id" : (?P<user_id>\d+) , "ip" : "(?P<ip>[\d.]+)" \}, "action" : "(?P<action>[a-z_]+)", '
    r'"url" : "(?P<url>[^"]+)", "timestamp" : "(?P<timestamp>\d\d/\d\d/\d{4} \d\d:\d\d:\d\d)"\}'
)
SPEC = GeneratorSpec(events=20_000, start=datetime(2017, 2, 2), hours=24, anomaly_rate=0.01,
                     duplicate_rate=0.005, seed=3)
# Counted once for SPEC by an independent reader (json.loads + the contract's rules, below) and
# fixed here: 200 corrupt lines (1% of 20,000), 9 kinds in equal numbers within one.
EXPECTED_REASONS = {"invalid_json": 46, "blank_line": 22, "not_an_object": 22, "missing_field": 44,
                    "wrong_type": 22, "bad_timestamp": 22, "bad_url": 22}
EXPECTED_EVENTS = 19_800
EXPECTED_DUPLICATES = 100


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return generate(SPEC, tmp_path_factory.mktemp("gen") / "events.json")


def _independent_reason(line: str) -> str | None:
    """The contract's verdict on one line, by json.loads (not the pipeline's SQL)."""
    if not line.strip():
        return "blank_line"
    try:
        event = json.loads(line)
    except ValueError:
        return "invalid_json"
    if not isinstance(event, dict):
        return "not_an_object"
    if event.get("action") is None or event.get("url") is None:
        return "missing_field"
    if not isinstance(event["url"], str):
        return "wrong_type"
    try:
        datetime.strptime(event["timestamp"], "%d/%m/%Y %H:%M:%S")
    except ValueError:
        return "bad_timestamp"
    if reference.url_levels(event["url"]) is None:
        return "bad_url"
    return None


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    spec = GeneratorSpec(events=3_000, anomaly_rate=0.01, duplicate_rate=0.01, seed=11)
    first = generate(spec, tmp_path / "a.json").read_bytes()
    assert generate(spec, tmp_path / "b.json").read_bytes() == first
    assert generate(spec, tmp_path / "c.json.gz").read_bytes() == generate(spec, tmp_path / "d.json.gz").read_bytes()
    assert gzip.decompress((tmp_path / "c.json.gz").read_bytes()) == first
    other = GeneratorSpec(events=3_000, anomaly_rate=0.01, duplicate_rate=0.01, seed=12)
    assert generate(other, tmp_path / "e.json").read_bytes() != first
    assert len(first.splitlines()) == 3_000


def test_valid_lines_have_the_samples_exact_format(generated):
    sample = SAMPLE.read_text().splitlines()
    assert all(LINE.fullmatch(line) for line in sample)  # the pattern is the sample's format
    lines = generated.read_text().split("\n")
    assert lines[-1] == "" and len(lines) == SPEC.events + 1  # every line ends in \n
    matched = [LINE.fullmatch(line) for line in lines[:-1]]
    # only the corrupt lines differ from the format (a truncated line or an ftp URL may still match)
    assert SPEC.events - sum(m is not None for m in matched) <= SPEC.corrupt_lines
    assert sum(m is not None for m in matched) >= SPEC.events - SPEC.corrupt_lines


def test_distributions_and_anomaly_classes_like_the_sample(generated):
    events = [m.groupdict() for line in generated.read_text().splitlines()
              if (m := LINE.fullmatch(line)) and _independent_reason(line) is None]
    assert len(events) == EXPECTED_EVENTS
    urls = Counter(e["url"] for e in events)
    prefixes = Counter(re.match(r"(https?://)?[^/]+/", url).group(0) for url in urls.elements())
    for prefix in ("https://www.hipages.com.au/", "www.hipages.com.au/", "hipages.com.au/", "w3.hipages.com.au/",
                   "http://www.hipages.com.au/", "https://www.petpages.com.au/"):
        assert prefixes[prefix] > 0, prefix
    assert 0.95 < prefixes["https://www.hipages.com.au/"] / len(events) < 0.995
    assert 0.15 < sum(n for u, n in urls.items() if "?search_str=" in u) / len(events) < 0.35
    bad_ips = sum(any(int(octet) > 255 for octet in e["ip"].split(".")) for e in events)
    assert 0.09 < bad_ips / len(events) < 0.15
    actions = Counter(e["action"] for e in events)
    assert set(actions) == {"page_view", "button_click", "list_directory", "claim"}
    assert actions.most_common(1)[0][0] == "page_view"
    per_user = Counter(e["user_id"] for e in events)
    assert 25 < len(events) / len(per_user) <= 31  # ~30 events per user per day (24 hours)
    assert len({e["session_id"] for e in events}) == len(events) - EXPECTED_DUPLICATES  # new session id per event
    times = [datetime.strptime(e["timestamp"], "%d/%m/%Y %H:%M:%S") for e in events]
    assert min(times) >= SPEC.start and max(times) < datetime(2017, 2, 3)
    assert len({t.hour for t in times}) == 24


def test_pipeline_validation_accepts_events_and_rejects_exactly_the_corrupt_lines(generated):
    independent = Counter(_independent_reason(line) for line in generated.read_text().split("\n")[:-1])
    assert independent == Counter({None: EXPECTED_EVENTS, **EXPECTED_REASONS})
    reasons: Counter = Counter()
    for batch in iter_classified([generated], ValidationSettings(now=datetime(2026, 1, 1)), new_connection()):
        for value, count in zip(*pc.value_counts(batch["reason"]).flatten()):
            reasons[value.as_py()] += count.as_py()
    assert reasons == independent
    assert sum(EXPECTED_REASONS.values()) == SPEC.corrupt_lines == round(SPEC.events * SPEC.anomaly_rate)


@pytest.mark.parametrize("kind", CORRUPT_KINDS)
def test_every_corrupt_kind_is_rejected(kind):
    line = SAMPLE.read_text().splitlines()[0]
    assert _independent_reason(line) is None
    assert _independent_reason(corrupt_line(line, kind)) is not None


def test_generate_command(tmp_path, capsys):
    out = tmp_path / "cli.json"
    assert cli_main(["generate", "--events", "500", "--start", "2017-02-02T20:00", "--hours", "2",
                     "--anomaly-rate", "0.02", "--seed", "5", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 500
    assert sum(_independent_reason(line) is not None for line in lines) == 10
    assert "wrote 500 lines (10 corrupt" in capsys.readouterr().err
    assert cli_main(["generate", "--events", "10", "--anomaly-rate", "2", "--out", str(out)]) == 2


def test_the_three_benchmark_implementations_agree(tmp_path):
    source = generate(GeneratorSpec(events=2_000, hours=3, anomaly_rate=0.01, duplicate_rate=0.01, seed=1),
                      tmp_path / "events.json")
    summary = run_pipeline(EventSource(source_glob=str(source)), str(tmp_path / "a"), progress=lambda _: None)
    assert summary.ok and summary.duplicates == 20 and summary.rejected == 20
    reference.run(source, tmp_path / "b")
    duckdb_sql.run(source, tmp_path / "c")
    for left, right in (("a", "b"), ("a", "c")):
        comparisons = compare_outputs((left, tmp_path / left), (right, tmp_path / right))
        assert all(c.same for c in comparisons), [c.__dict__ for c in comparisons]
        assert comparisons[0].left_rows == 1_960
