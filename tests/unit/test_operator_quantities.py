"""Quantities read and spelt as apimachinery v0.34 does (its own test tables, reused here).

The cluster tier checks the same spellings against a real API server."""

from __future__ import annotations

from fractions import Fraction

import pytest

from crontask_operator import quantities

# apimachinery's TestQuantityParseEmit: input -> what the server writes back.
PARSE_EMIT = [("1Ki", "1Ki"), ("1Mi", "1Mi"), ("1Gi", "1Gi"), ("1024Mi", "1Gi"),
              ("1000M", "1G"), (".001Ki", "1024m"), (".000001Ki", "1024u"),
              (".000000001Ki", "1024n"), (".000000000001Ki", "2n")]
# apimachinery's TestQuantityString: canonical spellings kept, alternate ones canonicalised.
CANONICAL = [("1Gi", "1024Mi"), ("300Mi", "307200Ki"), ("6Ki", ""), ("1001Gi", "1025024Mi"),
             ("1Ti", "1024Gi"), ("5", "5000m"), ("500m", "0.5"), ("1G", "1000M"),
             ("1G", "0.001T"), ("1m", "1000u"), ("80m", ""), ("1080m", "1.08"),
             ("1080m", "1080000000n"), ("300M", ""), ("1T", ""), ("1234567M", ""),
             ("1234567m", ""), ("3k", ""), ("1025", ""), ("0", ""), ("1e9", ".001e12"),
             ("1e-3", "0.001e0"), ("1e-9", "1000e-12"), ("80e-3", ""), ("300e6", ""),
             ("1e12", ""), ("1e3", ""), ("3e3", ""), ("0", "00"), ("1n", ""), ("80n", ""),
             ("1080n", ""), ("1u", ""), ("80u", ""), ("1080u", "")]


@pytest.mark.parametrize(("given", "stored"), PARSE_EMIT)
def test_parse_emit(given: str, stored: str) -> None:
    parsed = quantities.parse(given)
    assert parsed is not None and parsed.text == stored
    negative = quantities.parse("-" + given)
    assert negative is not None and negative.text == "-" + stored


@pytest.mark.parametrize(("stored", "alternate"), CANONICAL)
def test_canonical_spellings_are_kept_and_others_converge(stored: str, alternate: str) -> None:
    assert quantities.canonical(stored) == stored
    if alternate:
        assert quantities.canonical(alternate) == stored


@pytest.mark.parametrize(("given", "stored", "value"), [
    ("+1", "+1", 1), ("1000", "1k", 1000), (1000, "1k", 1000), (2, "2", 2),
    ("1.", "1.", 1), ("0.5Gi", "512Mi", 536870912), ("1.5", "1500m", Fraction(3, 2)),
    ("12e-1", "1200e-3", Fraction(6, 5)), ("1073741824", "1073741824", 2**30),
    ("1e-10", "1e-9", Fraction(1, 10**9)), ("0.0000000001", "1n", Fraction(1, 10**9)),
    ("9Ei", "9223372036854775807", 2**63 - 1)])
def test_corners(given: str | int, stored: str, value: int | Fraction) -> None:
    parsed = quantities.parse(given)
    assert parsed is not None
    assert (parsed.text, parsed.value) == (stored, value)


def test_far_out_values_are_decided_without_computing_them() -> None:
    huge = quantities.parse("1e999999999")
    assert huge is not None and huge.value > quantities.MAX_VALUE
    tiny = quantities.parse("1e-999999999")
    assert tiny is not None and tiny.text == "1e-9"


@pytest.mark.parametrize("bad", ["", "abc", "1Xi", "1 Mi", "1e", "1m5", "--1", "1e1.5",
                                 True, None, 1.5, "x" * 100])
def test_not_quantities(bad: object) -> None:
    assert quantities.parse(bad) is None


@pytest.mark.parametrize(("given", "stored"), [
    ("1n", "1m"), ("1e-10", "1e-3"), ("1500u", "2m"), ("1001u", "2m"), ("1000u", "1m"),
    ("1.0005", "1001m"), ("0.5Gi", "512Mi"), ("+1", "+1"), ("100u", "1m")])
def test_resource_lists_round_up_to_milli(given: str, stored: str) -> None:
    """SetDefaults_ResourceList rounds a container's requests and limits up to milli units."""
    assert quantities.canonical(given, resource_list=True) == stored
