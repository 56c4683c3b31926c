"""Kubernetes resource quantities, read and written exactly as the API server does.

The API server stores a quantity in its own canonical spelling (``1000m`` becomes ``1``,
``0.5Gi`` becomes ``512Mi``, ``1000`` becomes ``1k``) unless the spelling it was given already
counts as canonical, in which case it keeps it verbatim (``+1`` stays ``+1``). The operator writes
quantities in that same spelling, so the CronJob it applies is the CronJob the server keeps, and
a resync has nothing to repair.

This module mirrors ``ParseQuantity`` and ``CanonicalizeBytes`` of
k8s.io/apimachinery/pkg/api/resource (v0.34), including their corners: a canonical input string
is reused, values round up to nano units, binary quantities are capped at int64, a decimal
exponent beyond the SI suffixes loses its suffix. The cluster tier applies a list of spellings to
a real API server and checks that it stores what ``canonical`` says. Pure functions only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

MAX_VALUE: Final = 2**63 - 1
"""The operator refuses larger quantities: no node has them, and binary ones are capped here.
``parse`` reports any decimal value beyond about 1e20 as MAX_VALUE + 1 without computing it."""
MAX_TEXT: Final = 64
"""Longer spellings are refused before any arithmetic (the CRD allows at most this many)."""

DECIMAL_SI: Final = "DecimalSI"
BINARY_SI: Final = "BinarySI"
DECIMAL_EXPONENT: Final = "DecimalExponent"

_DECIMAL: Final = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
                   "E": 18}
_BINARY: Final = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SUFFIX: Final = {exp: suffix for suffix, exp in _DECIMAL.items()}
_BINARY_SUFFIX: Final = {exp: suffix for suffix, exp in _BINARY.items()}
_SUFFIX_CHARS: Final = frozenset("eEinumkKMGTP")
_DIGITS: Final = frozenset("0123456789")
_NANO: Final = 9
_MAX_INT64_FACTORS: Final = 18
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Quantity:
    value: Fraction
    text: str
    """The spelling the API server stores and returns."""
    format: str = DECIMAL_SI

    def in_resource_list(self) -> Quantity:
        """As the API server stores it in a ResourceList (a container's requests and limits):
        defaulting rounds every value up to milli units (SetDefaults_ResourceList), and a
        rounded value loses the spelling it was given."""
        milli = self.value * 1000
        if milli.denominator == 1:
            return self
        rounded = Fraction(math.ceil(abs(milli)), 1000) * (1 if self.value > 0 else -1)
        return Quantity(rounded, _canonical(rounded, self.format), self.format)


def _go_rem(a: int, b: int) -> int:
    """Go's ``%``: the remainder takes the sign of the dividend (Python's takes the divisor's)."""
    return int(math.fmod(a, b))


def _split(s: str) -> tuple[bool, str, str, str, str] | None:
    """parseQuantityString: sign, numeric part, numerator, denominator, suffix."""
    positive, pos, end = True, 0, len(s)
    if pos < end and s[0] in "+-":
        positive = s[0] == "+"
        pos += 1
    while pos < end and s[pos] == "0":
        pos += 1
    if pos >= end:
        return positive, "0", "0", "", ""
    start = pos
    while pos < end and s[pos] in _DIGITS:
        pos += 1
    num = s[start:pos] or "0"
    if pos >= end:
        return positive, s, num, "", ""
    denom = ""
    if s[pos] == ".":
        pos += 1
        start = pos
        while pos < end and s[pos] in _DIGITS:
            pos += 1
        denom = s[start:pos]
        if pos >= end:
            return positive, s, num, denom, ""
    value = s[:pos]
    suffix_start = pos
    while pos < end and s[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and s[pos] in "+-":
        pos += 1
    while pos < end and s[pos] in _DIGITS:
        pos += 1
    if pos < end:
        return None
    return positive, value, num, denom, s[suffix_start:]


def _go_parse_int64(text: str) -> int | None:
    body = text[1:] if text[:1] in "+-" else text
    if not body or any(c not in _DIGITS for c in body):
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def _interpret(suffix: str) -> tuple[int, int, str] | None:
    if suffix in _DECIMAL:
        return 10, _DECIMAL[suffix], DECIMAL_SI
    if suffix in _BINARY:
        return 2, _BINARY[suffix], BINARY_SI
    if len(suffix) > 1 and suffix[0] in "eE":
        parsed = _go_parse_int64(suffix[1:])
        if parsed is None:
            return None
        return 10, (parsed + 2**31) % 2**32 - 2**31, DECIMAL_EXPONENT  # Go's int32(...)
    return None


def _inf_dec(value: str) -> Fraction | None:
    """inf.Dec.SetString: an optional sign, digits with at most one decimal point."""
    body = value[1:] if value[:1] in "+-" else value
    whole, _, frac = body.partition(".")
    if not (whole + frac) or any(c not in _DIGITS for c in whole + frac) or "." in frac:
        return None
    number = Fraction(int(whole + frac), 10 ** len(frac))
    return -number if value.startswith("-") else number


def _round_up_nano(value: Fraction) -> Fraction:
    scaled = abs(value) * 10**_NANO
    rounded = Fraction(math.ceil(scaled), 10**_NANO)
    return -rounded if value < 0 else rounded


def parse(raw: object) -> Quantity | None:
    """The quantity the API server would store for ``raw`` (a string or an integer), or None
    when the server would refuse it."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    s = str(raw).strip()
    if not s or len(s) > MAX_TEXT:
        return None
    if s == "0":
        return Quantity(Fraction(0), "0")
    split = _split(s)
    if split is None:
        return None
    positive, value_text, num, denom, suffix = split
    interpreted = _interpret(suffix)
    if interpreted is None:
        return None
    base, exponent, fmt = interpreted
    digits = int(num + denom)
    if digits == 0:
        return Quantity(Fraction(0), "0")
    if base == 10:
        # Decide far-out magnitudes before any power is computed: "1e999999999" must not make
        # the operator raise 10 to the billionth power.
        magnitude = len(str(digits)) + exponent - len(denom)
        if magnitude > 20:
            return Quantity(Fraction(MAX_VALUE + 1), s)
        if magnitude < -_NANO - 1:  # below a tenth of a nano unit: rounds up to exactly 1n
            tiny = Fraction(1 if positive else -1, 10**_NANO)
            return Quantity(tiny, _canonical(tiny, fmt), fmt)

    if fmt == BINARY_SI:
        scale, mantissa = 0, 1
        if exponent >= 0 and not denom:
            mantissa = 1 << exponent
            precision = 15 - len(num) - int(exponent * 3 / 10) - 1
        else:
            precision = -1
    else:
        scale, mantissa = exponent, 1
        precision = _MAX_INT64_FACTORS - (len(num) + len(denom))
    if precision >= 0:
        scale -= len(denom)
        if scale >= -_NANO:
            shifted = num + denom
            number = int(shifted)
            result = number * mantissa
            if _INT64_MIN <= result <= _INT64_MAX:
                result = result if positive else -result
                if fmt == BINARY_SI:
                    reused = exponent % 10 == 0 and number & 0x07 != 0
                else:
                    reused = (_go_rem(scale, 3) == 0 and not shifted.endswith("000")
                              and shifted[0] != "0")
                amount = Fraction(result) * Fraction(10) ** scale
                return Quantity(amount, s if reused else _canonical(amount, fmt), fmt)

    parsed = _inf_dec(value_text)
    if parsed is None:
        return None
    amount = parsed * (Fraction(10) ** exponent if base == 10 else Fraction(2) ** exponent)
    negative = amount < 0
    amount = abs(amount)
    if amount != 0:
        amount = _round_up_nano(amount)
    if fmt == BINARY_SI and amount > _INT64_MAX:
        amount = Fraction(_INT64_MAX)
    if fmt == BINARY_SI and 0 < amount < 1:
        fmt = DECIMAL_SI
    amount = -amount if negative else amount
    return Quantity(amount, _canonical(amount, fmt), fmt)


def _canonical(value: Fraction, fmt: str) -> str:
    """CanonicalizeBytes: the spelling of a parsed value that kept no string of its own."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if fmt == BINARY_SI and (magnitude < 1024 or magnitude.denominator != 1):
        fmt = DECIMAL_SI
    if fmt == BINARY_SI:
        amount, times = int(magnitude), 0
        while amount >= 1024 and amount % 1024 == 0:
            amount //= 1024
            times += 1
        return f"{sign}{amount}{_BINARY_SUFFIX.get(times * 10, '')}"
    number = magnitude * 10**_NANO
    mantissa, exp = math.ceil(number), -_NANO  # already whole nano units: ceil is exact
    while mantissa >= 10 and mantissa % 10 == 0:
        mantissa //= 10
        exp += 1
    while exp % 3:
        mantissa *= 10
        exp -= 1
    suffix = (f"e{exp}" if exp else "") if fmt == DECIMAL_EXPONENT else _DECIMAL_SUFFIX.get(exp, "")
    return f"{sign}{mantissa}{suffix}"


def canonical(raw: object, *, resource_list: bool = False) -> str | int | object:
    """``raw`` as the server spells it (in a container's requests or limits when
    ``resource_list``); anything that is not a quantity comes back unchanged (the server will
    refuse it, and the refusal is reported)."""
    parsed = parse(raw)
    if parsed is None:
        return raw
    return parsed.in_resource_list().text if resource_list else parsed.text


def same(a: object, b: object) -> bool:
    """Two quantities with the same value (a fallback for the drift test: equal spellings are
    compared first)."""
    pa, pb = parse(a), parse(b)
    return pa is not None and pb is not None and pa.value == pb.value
