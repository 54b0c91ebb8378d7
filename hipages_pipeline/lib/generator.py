"""Synthetic website events in the sample's exact line format, for benchmarks and tests.

``hipages-pipeline generate --events N --start 2017-02-02T00:00 --hours H --anomaly-rate R
--seed S --out FILE`` writes N lines (gzip when FILE ends in ``.gz``), each in the format of
``data/source_event_data.json``, byte for byte (key order, spacing, ``user.id`` as a JSON
integer followed by `` ,``)::

    { "event_id" : "893479324983546", "user" : { "session_id" : "564561", "id" : 56456 , "ip" : "111.222.333.4" }, "action" : "page_view", "url" : "https://www.hipages.com.au/articles", "timestamp" : "02/02/2017 20:22:00"}

What is generated, and how it follows the sample:

- **time**: uniform over ``[start, start + H hours)``, to the second, lines sorted by time (as
  a receiver dumps them); ``timestamp`` is ``DD/MM/YYYY HH:MM:SS``.
- **users**: ``ceil(N / (30 * H / 24))`` users, so about 30 events per user per day; each event
  picks a user uniformly. ``user.id`` is an integer (as in the sample; the schema says string).
- **session_id**: a different number on every line (as in the sample), counting up from 564561.
- **event_id**: 15 digits, unique across the file.
- **action**: ``page_view`` 47%, ``button_click`` 29%, ``list_directory`` 12%, ``claim`` 12%,
  each with the URL paths the sample shows for it (``find/<trade>``, ``articles[/<slug>]``,
  ``photos/<room>``, ``connect/<business>/service/<id>``, ``advertise``,
  ``get_quotes_simple?search_str=<term>``: about 23% of URLs carry that query string).
- **URL anomaly classes** (valid events, at the sample's rates): no scheme
  (``www.hipages.com.au/...`` 0.6%), bare host (``hipages.com.au/...`` 0.2%), ``w3.`` host
  (0.2%), ``http://`` (0.2%), foreign domains (``petpages.com.au``... 1%).
- **ip**: a fixed /24 per user, last octet per event; 12% of events have an octet over 255
  (``333``, as in the sample).
- **corrupt lines**: exactly ``round(N * R)`` lines (``--anomaly-rate R``) chosen at random are
  replaced by lines the contract quarantines, the kinds of :data:`CORRUPT_KINDS` in equal
  numbers (within one) and random order (the pipeline's reason code in brackets): ``id_56a56`` (the real ``"id" : 56a56``; invalid_json),
  ``truncated`` (invalid_json), ``blank`` (blank_line), ``not_an_object`` (a JSON array),
  ``null_action`` (missing_field), ``missing_url`` (missing_field), ``numeric_url``
  (wrong_type), ``bad_timestamp`` (``31/02/...``), ``ftp_url`` (bad_url).
- **duplicates** (``--duplicate-rate``, default 0): exactly ``round(N * D)`` other lines become
  byte-identical copies (retries) of a random valid event, so the pipeline drops them.

The output is a function of the arguments alone: the same seed gives the same bytes (the gzip
header carries no time stamp). Lines are built column-wise with numpy and pyarrow (no Python
loop per event) and written in chunks of a million lines: 10 million events (2.4 GB) take about
30 s and 1.7 GB of memory on 2 cores; gzip output (compression level 1) takes about as long.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hipages_pipeline.lib.contract import SOURCE_TIMESTAMP_FORMAT
from hipages_pipeline.lib.corrupt_lines import CORRUPT_KINDS, corrupt_line  # noqa: F401 (part of the generator's API)
from hipages_pipeline.lib.synthetic_urls import ACTION_SHARES, ACTIONS, url_vocabulary

SESSION_ID_START = 564561
EVENTS_PER_USER_PER_DAY = 30
CHUNK_LINES = 1_000_000

OUR_HOST = "https://www.hipages.com.au/"
# URL prefixes other than OUR_HOST, with their share of events (the sample's anomaly classes).
HOST_ANOMALIES: list[tuple[str, float]] = [
    ("www.hipages.com.au/", 0.006),        # no scheme
    ("hipages.com.au/", 0.002),            # bare host, no scheme
    ("w3.hipages.com.au/", 0.002),         # w3. host, no scheme
    ("http://www.hipages.com.au/", 0.002),  # http
    ("https://www.petpages.com.au/", 0.002),  # foreign domains, 1% together
    ("https://www.randompages.com.au/", 0.002),
    ("https://www.myhelpfulpages.com.au/", 0.002),
    ("https://www.somepages.com.au/", 0.002),
    ("https://www.usefulpages.com.au/", 0.002),
]
BAD_OCTET_SHARE = 0.12
BAD_OCTET = 333




@dataclass(frozen=True)
class GeneratorSpec:
    """What to generate (see the module docstring for the distributions).

    events: number of lines written (corrupt lines and duplicates included).
    start: first second of the time range (naive, in the source time zone).
    hours: length of the time range.
    anomaly_rate: share of lines that are corrupt (``round(events * anomaly_rate)`` lines).
    duplicate_rate: share of lines that are retries of another event.
    seed: the random seed; the same spec gives the same bytes.
    """

    events: int
    start: datetime = datetime(2017, 2, 2)
    hours: int = 24
    anomaly_rate: float = 0.001
    duplicate_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.events < 0 or self.hours < 1:
            raise ValueError("events must be >= 0 and hours >= 1")
        if not (0 <= self.anomaly_rate <= 1 and 0 <= self.duplicate_rate <= 1):
            raise ValueError("anomaly_rate and duplicate_rate must be between 0 and 1")
        if self.corrupt_lines + self.duplicate_lines > self.events:
            raise ValueError("anomaly_rate + duplicate_rate must be at most 1")

    @property
    def corrupt_lines(self) -> int:
        """Exact number of corrupt lines."""
        return round(self.events * self.anomaly_rate)

    @property
    def duplicate_lines(self) -> int:
        """Exact number of duplicate (retry) lines."""
        return round(self.events * self.duplicate_rate)

    @property
    def users(self) -> int:
        """Number of distinct users: about 30 events per user per day."""
        return max(1, math.ceil(self.events / (EVENTS_PER_USER_PER_DAY * self.hours / 24)))


@dataclass
class _Columns:
    """The generated fields of every line, as numpy arrays (one element per line)."""

    seconds: np.ndarray      # int64 offset from start
    event_id: np.ndarray     # int64, 15 digits
    session_id: np.ndarray   # int64
    user: np.ndarray         # int64 index into the users
    last_octet: np.ndarray   # int64
    bad_ip: np.ndarray       # bool
    action: np.ndarray       # int8 index into ACTIONS
    url: np.ndarray          # int32 index into the URL vocabulary
    corrupt: np.ndarray      # int64 line indexes of corrupt lines, in order
    corrupt_kind: np.ndarray  # int64, index into CORRUPT_KINDS, aligned with corrupt


def _unique_event_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct random 15-digit integers."""
    ids = rng.integers(10**14, 10**15, n, dtype=np.int64)
    while True:
        _, first = np.unique(ids, return_index=True)
        if len(first) == n:
            return ids
        repeated = np.setdiff1d(np.arange(n), first)
        ids[repeated] = rng.integers(10**14, 10**15, len(repeated), dtype=np.int64)


def _columns(spec: GeneratorSpec, rng: np.random.Generator, vocabulary_size: int,
             action_paths: list[np.ndarray], action_probabilities: list[np.ndarray]) -> _Columns:
    n = spec.events
    seconds = np.sort(rng.integers(0, spec.hours * 3600, n, dtype=np.int64))
    user = rng.integers(0, spec.users, n, dtype=np.int64)
    action = rng.choice(len(ACTIONS), n, p=ACTION_SHARES).astype(np.int8)
    url = np.empty(n, dtype=np.int32)
    for a in range(len(ACTIONS)):
        mask = action == a
        url[mask] = rng.choice(action_paths[a], int(mask.sum()), p=action_probabilities[a])
    # Host variant: 0 = OUR_HOST, 1.. = HOST_ANOMALIES; encoded in the URL index (host * paths + path).
    shares = [1 - sum(s for _, s in HOST_ANOMALIES)] + [s for _, s in HOST_ANOMALIES]
    host = rng.choice(len(shares), n, p=shares).astype(np.int32)
    url = host * vocabulary_size + url
    columns = _Columns(
        seconds=seconds,
        event_id=_unique_event_ids(rng, n),
        session_id=SESSION_ID_START + np.arange(n, dtype=np.int64),
        user=user,
        last_octet=rng.integers(1, 255, n, dtype=np.int64),
        bad_ip=rng.random(n) < BAD_OCTET_SHARE,
        action=action,
        url=url,
        corrupt=np.empty(0, dtype=np.int64),
        corrupt_kind=np.empty(0, dtype=np.int64),
    )
    special = rng.permutation(n)[: spec.corrupt_lines + spec.duplicate_lines]
    corrupt = np.sort(special[: spec.corrupt_lines])
    duplicates = special[spec.corrupt_lines:]
    if len(duplicates):
        valid = np.setdiff1d(np.arange(n), special)
        sources = valid[rng.integers(0, len(valid), len(duplicates))]
        for name in ("seconds", "event_id", "session_id", "user", "last_octet", "bad_ip", "action", "url"):
            array = getattr(columns, name)
            array[duplicates] = array[sources]
    columns.corrupt = corrupt
    columns.corrupt_kind = rng.permutation(np.arange(len(corrupt)) % len(CORRUPT_KINDS))
    return columns


def _user_ip_prefixes(rng: np.random.Generator, users: int) -> tuple[pa.Array, pa.Array]:
    """Per user a /24 (``a.b.c.``) and the same with the third octet over 255 (``a.b.333.``)."""
    a = pc.cast(pa.array(rng.integers(1, 224, users)), pa.string())
    b = pc.cast(pa.array(rng.integers(0, 256, users)), pa.string())
    c = pc.cast(pa.array(rng.integers(0, 256, users)), pa.string())
    good = pc.binary_join_element_wise(a, ".", b, ".", c, ".", "")
    bad = pc.binary_join_element_wise(a, ".", b, f".{BAD_OCTET}.", "")
    return good, bad


def _format_lines(c: _Columns, lo: int, hi: int, user_ids: pa.Array, prefixes: tuple[pa.Array, pa.Array],
                  urls: pa.Array, start: np.datetime64) -> pa.Array:
    """The lines ``lo .. hi - 1`` as one string array, each ending in ``\\n`` (valid events only)."""
    seconds = c.seconds[lo:hi]
    if len(seconds) == 0:
        return pa.array([], pa.string())
    distinct, inverse = np.unique(seconds, return_inverse=True)
    stamps = pc.strftime(pa.array(start + distinct.astype("timedelta64[s]")), format=SOURCE_TIMESTAMP_FORMAT)
    user = pa.array(c.user[lo:hi])
    ip_prefix = pc.if_else(pa.array(c.bad_ip[lo:hi]), prefixes[1].take(user), prefixes[0].take(user))
    actions = pa.array(ACTIONS).take(pa.array(c.action[lo:hi]))
    return pc.binary_join_element_wise(
        '{ "event_id" : "', pc.cast(pa.array(c.event_id[lo:hi]), pa.string()),
        '", "user" : { "session_id" : "', pc.cast(pa.array(c.session_id[lo:hi]), pa.string()),
        '", "id" : ', user_ids.take(user),
        ' , "ip" : "', ip_prefix, pc.cast(pa.array(c.last_octet[lo:hi]), pa.string()),
        '" }, "action" : "', actions,
        '", "url" : "', urls.take(pa.array(c.url[lo:hi])),
        '", "timestamp" : "', stamps.take(pa.array(inverse)),
        '"}\n', "",
    )


def iter_chunks(spec: GeneratorSpec, chunk_lines: int = CHUNK_LINES) -> Iterator[bytes]:
    """Yield the file's bytes in chunks of about ``chunk_lines`` lines (each line ends in ``\\n``)."""
    rng = np.random.default_rng(spec.seed)
    paths, action_paths, action_probabilities = url_vocabulary(rng)
    prefixes = [OUR_HOST] + [h for h, _ in HOST_ANOMALIES]
    urls = pa.array([prefix + path for prefix in prefixes for path in paths])
    user_numbers = 56456 + np.arange(spec.users, dtype=np.int64) * 7 + rng.integers(0, 7, spec.users)
    user_ids = pc.cast(pa.array(user_numbers), pa.string())
    ip_prefixes = _user_ip_prefixes(rng, spec.users)
    columns = _columns(spec, rng, len(paths), action_paths, action_probabilities)
    start = np.datetime64(spec.start.replace(tzinfo=None), "s")
    for lo in range(0, spec.events, chunk_lines):
        hi = min(lo + chunk_lines, spec.events)
        lines = _format_lines(columns, lo, hi, user_ids, ip_prefixes, urls, start)
        first, last = np.searchsorted(columns.corrupt, [lo, hi])
        if last > first:
            positions = columns.corrupt[first:last] - lo
            originals = lines.take(pa.array(positions)).to_pylist()
            kinds = columns.corrupt_kind[first:last]
            replaced = [corrupt_line(text[:-1], CORRUPT_KINDS[k]) + "\n" for text, k in zip(originals, kinds)]
            mask = np.zeros(hi - lo, dtype=bool)
            mask[positions] = True
            lines = pc.replace_with_mask(lines, pa.array(mask), pa.array(replaced, pa.string()))
        yield _data_bytes(lines)


def _data_bytes(lines: pa.Array) -> bytes | memoryview:
    """The concatenated values of a string array (its data buffer between the first and last offset)."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    return memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]]


def generate(spec: GeneratorSpec, out: str | Path, chunk_lines: int = CHUNK_LINES) -> Path:
    """Write the events of ``spec`` to ``out`` (gzip when it ends in ``.gz``); return the path.

    The parent directory is created. The same spec always gives the same bytes.
    """
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb",
                                                       compresslevel=1, mtime=0) as handle:
            for chunk in iter_chunks(spec, chunk_lines):
                handle.write(chunk)
    else:
        with open(path, "wb") as handle:
            for chunk in iter_chunks(spec, chunk_lines):
                handle.write(chunk)
    return path
