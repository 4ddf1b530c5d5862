"""Field validators: the typed fields a message body is made of (Int, Num,
Bool, Str, Optional, Choices, Hist) and the bounds they share.

Separate from the catalogue (which fields each type has) and the codec (how
a line becomes a message), so the report's readers check files with the very
same classes (``Field`` is their base).
"""
import math

from diskbench.metrics import LatencyHistogram
from diskbench.compat import as_text, integer_types, string_types, text_type
from diskbench.protocol.text import _ASCII_CONTROLS, UNSAFE, safe_text

#: Most histogram buckets one perf message may carry.
MAX_HIST_BUCKETS = 2048
#: Upper bound for any count or byte figure: absurd values are refused.
MAX_INT = 2 ** 62
#: Highest latency bucket index a histogram may carry: what metrics computes.
MAX_BUCKET_INDEX = LatencyHistogram.MAX_BUCKET


# --- field validators -------------------------------------------------------------
class Field(object):
    """One typed field. ``check`` returns the (possibly cleaned) value or raises."""

    optional = False

    def describe(self):
        return self.__class__.__name__.lower()

    def fast(self):
        """(type, lo, hi): a value of exactly that type within [lo, hi] is
        valid as it is (``check`` would return it unchanged); (None, None,
        None) when there is no such shortcut. The codec's body loop uses it."""
        return (None, None, None)

    def check(self, value):  # pragma: no cover - abstract
        raise NotImplementedError


class Int(Field):
    def __init__(self, lo=0, hi=MAX_INT):
        self.lo, self.hi = lo, hi

    def describe(self):
        return "an integer from %d to %d" % (self.lo, self.hi)

    def fast(self):
        return (int, self.lo, self.hi)

    def check(self, value):
        if type(value) is int and self.lo <= value <= self.hi:
            return value      # the common case, decided in one test
        if isinstance(value, bool) or not isinstance(value, integer_types):
            raise TypeError
        if not self.lo <= value <= self.hi:
            raise ValueError
        return int(value)


class Num(Field):
    """A finite number (int or float) within bounds; never NaN or infinity."""

    def __init__(self, lo=0.0, hi=1e12):
        self.lo, self.hi = lo, hi
        # Finite bounds: a value between them is finite (the fast path in check).
        self.finite = not (math.isinf(lo) or math.isinf(hi))

    def describe(self):
        return "a finite number from %g to %g" % (self.lo, self.hi)

    def fast(self):
        return (float, self.lo, self.hi) if self.finite else Field.fast(self)

    def check(self, value):
        if type(value) is float and self.lo <= value <= self.hi and self.finite:
            return value      # the common case (NaN fails the comparisons)
        if isinstance(value, bool) or not isinstance(value, integer_types + (float,)):
            raise TypeError
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            raise ValueError
        if not self.lo <= value <= self.hi:
            raise ValueError
        return float(value)


class Bool(Field):
    def describe(self):
        return "true or false"

    def check(self, value):
        if not isinstance(value, bool):
            raise TypeError
        return value


class Str(Field):
    """Text without control characters (they would forge log lines).

    ``strict`` (names, choices): every unsafe character is refused. Otherwise
    (free text) ASCII controls are refused and the other unsafe characters are
    escaped (see the module docstring); the length bound applies to the text
    as received, and the escaped text is cut to it (so what is stored is
    itself valid when read back after a restart).
    """

    def __init__(self, max_len=256, choices=None, min_len=0, strict=False):
        self.max_len, self.choices, self.min_len = max_len, choices, min_len
        self.strict = strict or bool(choices)
        # a choice as received is valid as it is (the common case: one lookup)
        self._choices_ok = frozenset(c for c in choices or () if not UNSAFE.search(c)
                                     and min_len <= len(c) <= max_len)

    def describe(self):
        if self.choices:
            return "one of %s" % ", ".join(self.choices)
        if self.strict:
            return ("text of %d to %d characters without control, line-separator, "
                    "bidi or surrogate characters" % (self.min_len, self.max_len))
        return "text of %d to %d characters without control characters" % (
            self.min_len, self.max_len)

    def check(self, value):
        if type(value) is text_type and value in self._choices_ok:
            return value
        if not isinstance(value, string_types):
            raise TypeError
        value = as_text(value)
        if not self.min_len <= len(value) <= self.max_len:
            raise ValueError
        if self.strict:
            if UNSAFE.search(value):
                raise ValueError
        elif _ASCII_CONTROLS.search(value):
            raise ValueError
        else:  # escaped, and cut to the bound again: a record read back passes
            value = safe_text(value)[:self.max_len]
        if self.choices and value not in self.choices:
            raise ValueError
        return value


class Optional(Field):
    """``inner`` or null."""

    optional = True

    def __init__(self, inner):
        self.inner = inner

    def describe(self):
        return self.inner.describe() + " or null"

    def fast(self):
        return self.inner.fast()

    def check(self, value):
        return None if value is None else self.inner.check(value)


class Choices(Field):
    """A list of distinct names, each one of ``choices``."""

    def __init__(self, choices):
        self.choices = tuple(choices)

    def describe(self):
        return "a list of distinct names from %s" % ", ".join(self.choices)

    def check(self, value):
        if not isinstance(value, list):
            raise TypeError
        out = [as_text(v) for v in value if isinstance(v, string_types)]
        if len(out) != len(value) or len(set(out)) != len(out) or \
                any(v not in self.choices for v in out):
            raise ValueError
        return out


_BUCKET = Int(0, MAX_BUCKET_INDEX)
_COUNT = Int(0, MAX_INT)


class Hist(Field):
    """A sparse histogram: a list of [bucket index, count] pairs (see metrics)."""

    def describe(self):
        return ("a list of at most %d [bucket, count] integer pairs, bucket 0 to %d"
                % (MAX_HIST_BUCKETS, MAX_BUCKET_INDEX))

    def check(self, value):
        if not isinstance(value, list):
            raise TypeError
        if len(value) > MAX_HIST_BUCKETS:
            raise ValueError
        b_lo, b_hi, n_lo, n_hi = _BUCKET.lo, _BUCKET.hi, _COUNT.lo, _COUNT.hi
        for pair in value:
            # the common case (a perf message carries 10 to 20 pairs): ints
            # within bounds, so the list is valid as it is; no copy, no calls
            if type(pair) is list and len(pair) == 2:
                index, n = pair
                if type(index) is int and type(n) is int and \
                        b_lo <= index <= b_hi and n_lo <= n <= n_hi:
                    continue
            return self._checked(value)
        return value

    @staticmethod
    def _checked(value):
        """Every pair through the Int checks (raising as they do): a copy."""
        out = []
        bucket, count = _BUCKET.check, _COUNT.check
        for pair in value:
            if type(pair) is not list or len(pair) != 2:
                raise TypeError
            out.append([bucket(pair[0]), count(pair[1])])
        return out

