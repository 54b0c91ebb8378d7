"""URL and IP rules of the contract, each expected value worked out by hand."""

import pandas as pd
import pytest

from hipages_pipeline.lib.events.ips import anonymise_ip, anonymise_ips
from hipages_pipeline.lib.events.urls import split_url, split_urls

# Every URL anomaly class present in the sample file, with the levels the contract asks for.
SAMPLE_CLASSES = [
    ("https://www.hipages.com.au/articles", ("hipages.com.au", "articles", None)),
    ("https://www.hipages.com.au/connect/sfelectrics/service/190625", ("hipages.com.au", "connect", "sfelectrics")),
    # no scheme
    ("www.hipages.com.au/articles", ("hipages.com.au", "articles", None)),
    # bare registrable domain, no scheme
    ("hipages.com.au/connect/sfelectrics/service/190625", ("hipages.com.au", "connect", "sfelectrics")),
    # http instead of https
    ("http://www.hipages.com.au/find/electricians", ("hipages.com.au", "find", "electricians")),
    # w3. host
    ("w3.hipages.com.au/articles", ("hipages.com.au", "articles", None)),
    # query string is not part of the path
    ("https://www.hipages.com.au/get_quotes_simple?search_str=sfdg", ("hipages.com.au", "get_quotes_simple", None)),
    ("www.hipages.com.au/get_quotes_simple?search_str=sfdg", ("hipages.com.au", "get_quotes_simple", None)),
    # foreign domain
    ("https://www.petpages.com.au/find/plumbers", ("petpages.com.au", "find", "plumbers")),
    # short paths
    ("https://www.hipages.com.au/", ("hipages.com.au", None, None)),
    ("https://www.hipages.com.au", ("hipages.com.au", None, None)),
]

HOSTILE = [
    ("https://WWW.HiPages.COM.AU/Articles", ("hipages.com.au", "Articles", None)),  # host lower-cased, path kept
    ("https://www.hipages.com.au:8443/find/x", ("hipages.com.au", "find", "x")),  # port
    ("https://user:secret@www.hipages.com.au/find/x", ("hipages.com.au", "find", "x")),  # userinfo
    ("https://www.hipages.com.au./find/x", ("hipages.com.au", "find", "x")),  # trailing dot
    ("https://www.bücher.de/a/b", ("bücher.de", "a", "b")),  # IDN host, kept in Unicode
    ("https://www.xn--bcher-kva.de/a", ("xn--bcher-kva.de", "a", None)),  # punycode kept as written
    ("  https://www.hipages.com.au/find/x  ", ("hipages.com.au", "find", "x")),  # surrounding spaces
    ("https://www.hipages.com.au/find%20x/a b", ("hipages.com.au", "find%20x", "a b")),  # spaces in path
    ("https://www.hipages.com.au//find///x#frag", ("hipages.com.au", "find", "x")),  # empty segments, fragment
    ("https://shop.example.co.uk/x", ("example.co.uk", "x", None)),  # multi-label public suffix
]

INVALID = [
    ("", "url is empty"),
    ("   ", "url is empty"),
    ("https://", "has no host"),
    ("ftp://www.hipages.com.au/x", "has scheme 'ftp'"),
    ("http://1.2.3.4/x", "IP address as host"),
    ("http://[::1]/x", "IP address as host"),
    ("http://localhost/x", "no registrable domain"),
    ("http://com.au/x", "no registrable domain"),
    ("http://www.hi pages.com.au/x", "invalid host"),
    ("http://www.hipages.com.au:99999/x", "cannot be parsed"),
]


@pytest.mark.parametrize(("url", "expected"), SAMPLE_CLASSES + HOSTILE)
def test_url_levels(url, expected):
    parts = split_url(url)
    assert parts.error is None
    assert (parts.url_level1, parts.url_level2, parts.url_level3) == expected


@pytest.mark.parametrize(("url", "message"), INVALID)
def test_invalid_urls_are_errors_not_exceptions(url, message):
    parts = split_url(url)
    assert parts.url_level1 is None and parts.url_level2 is None
    assert message in parts.error


def test_split_urls_works_on_distinct_values():
    frame = split_urls(pd.Series(["w3.hipages.com.au/a", "w3.hipages.com.au/a", None, "http://localhost/"]))
    assert frame["url"].tolist() == ["w3.hipages.com.au/a", "http://localhost/"]
    assert frame["url_level1"].tolist() == ["hipages.com.au", None]
    assert frame["url_error"].notna().tolist() == [False, True]


@pytest.mark.parametrize(("ip", "expected"), [
    ("111.222.33.66", "111.222.33.0"),
    ("  10.1.2.3 ", "10.1.2.0"),
    ("111.222.333.4", None),  # octet over 255, as in the sample
    ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3:8d3::"),
    ("not an ip", None),
    ("", None),
    (None, None),
    (12345, None),
])
def test_anonymise_ip(ip, expected):
    assert anonymise_ip(ip) == expected


def test_anonymise_ips_flags_validity():
    frame = anonymise_ips(pd.Series(["1.2.3.4", "1.2.3.4", "1.2.3.400"]))
    assert frame.to_dict("records") == [
        {"ip": "1.2.3.4", "ip_anonymised": "1.2.3.0", "ip_valid": True},
        {"ip": "1.2.3.400", "ip_anonymised": None, "ip_valid": False},
    ]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ip_like = st.one_of(
    st.lists(st.integers(0, 400).map(str), min_size=3, max_size=5).map(".".join),
    st.from_regex(r"\A\s?[0-9.]{1,16}\s?\Z"),
    st.from_regex(r"\A[0-9a-fA-F:]{2,20}\Z"),
    st.sampled_from(["01.2.3.4", "1.2.3.04", "00.0.0.0", "0.0.0.0", "255.255.255.255", "256.1.1.1",
                     "::ffff:1.2.3.4", "2001:db8::1", "1.2.3", "١.٢.٣.٤", "1.2.3.4\n"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ip_like, min_size=1, max_size=20))
def test_vectorised_ips_agree_with_the_ipaddress_library(values):
    frame = anonymise_ips(pd.Series(values, dtype="object"))
    assert sorted(frame["ip"]) == sorted(set(values))
    for raw, anonymised, valid in frame[["ip", "ip_anonymised", "ip_valid"]].itertuples(index=False):
        assert anonymised == anonymise_ip(raw), raw
        assert valid == (anonymise_ip(raw) is not None)
