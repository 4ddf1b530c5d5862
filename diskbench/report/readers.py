"""Readers of the JSON files a run leaves (report.json, run.json), validated like the wire.

A file we wrote can come back truncated, damaged, hostile or another tool's or
version's. Each reader parses strictly (``strict_json``: UTF-8, no NaN,
Infinity or a number too big for a float, no nesting deeper than Python's
parser takes) and checks every value it hands on with the protocol's own field
rules (``protocol.Str``, ``Num``, ``Int``: one set of rules). What it cannot
use is never a traceback: a bad document raises ``Unreadable`` (its text names
the file, what is wrong and the fix; the CLI exits 2), a bad entry or field is
left out and counted in one warning. perf.jsonl is read record by record in
``series.iter_records`` (``protocol.parse_record``).
"""
from __future__ import absolute_import

import errno
import json
import math

from diskbench import plan, protocol
from diskbench.compat import RecursionError, as_text, integer_types
from diskbench.report import build as build_mod
from diskbench import states

#: The largest figure (MiB, MiB/s, ms, s) believed in a report.json: beyond, the
#: file is not a benchmark's (and a delta or ratio of it could overflow a float).
#: The writer's bound too (build.FIGURE_MAX, one source): what it writes is read.
MAX_FIGURE = build_mod.FIGURE_MAX
#: The smallest figure above 0 believed (less than a byte in a century in
#: MiB/s): a ratio to a smaller one would overflow a float.
MIN_FIGURE = build_mod.FIGURE_MIN
#: The largest sum over clients believed (totals.written_mib, the aggregate).
MAX_SUM = build_mod.SUM_MAX
#: Server warnings kept from an old report.json (each is one sentence).
MAX_WARNINGS = 1000
#: The longest text believed in run.json's report facts (a server warning or a
#: client's state reason may quote a client's own text, the wire's 2048, and more).
MAX_FACT_TEXT = 65536


class Unreadable(Exception):
    """The file or log dir cannot be read as a run; the message names the fix."""


class _Figure(protocol.Num):
    """A figure of a report: 0, or from MIN_FIGURE to MAX_FIGURE (the wire's Num rule)."""

    def __init__(self, hi=MAX_FIGURE):
        protocol.Num.__init__(self, 0.0, hi)

    def describe(self):
        return "0 or a number from %g to %g" % (MIN_FIGURE, self.hi)

    def check(self, value):
        value = protocol.Num.check(self, value)
        if 0 < value < MIN_FIGURE:
            raise ValueError
        return value


FIGURE = protocol.Optional(_Figure())
#: A sum over the clients: each may be up to MAX_FIGURE.
SUM = protocol.Optional(_Figure(MAX_SUM))
#: A figure that may be below 0 (a run's length on clocks that disagree).
SIGNED = protocol.Optional(protocol.Num(-MAX_FIGURE, MAX_FIGURE))
NAME = protocol.Str(max_len=128, min_len=1, strict=True)     # the wire's client name
TEXT = protocol.Optional(protocol.Str(max_len=protocol.TEXT_MAX_CHARS))
TS = protocol.Num(0.0, 1e11)                                  # the wire's timestamps
COUNT = protocol.Int()
OPT_COUNT = protocol.Optional(COUNT)
EXIT_CODE = protocol.Optional(protocol.Int(0, 255))
STATE = protocol.Str(choices=states.STATES)
YES_NO = protocol.Optional(protocol.Bool())


#: Where a plan setting came from (report: plan_source).
PLAN_SOURCES = (plan.FROM_CLIENT, plan.FROM_SERVER, plan.FROM_DEFAULT)


class _ListOf(protocol.Field):
    """A list of ``inner`` values."""

    def __init__(self, inner):
        self.inner = inner

    def describe(self):
        return "a list of %s" % self.inner.describe()

    def check(self, value):
        if not isinstance(value, list):
            raise TypeError
        return [self.inner.check(v) for v in value]


class _MapOf(protocol.Field):
    """An object of ``key`` names to ``inner`` values."""

    def __init__(self, key, inner):
        self.key, self.inner = key, inner

    def describe(self):
        return "an object of %s to %s" % (self.key.describe(), self.inner.describe())

    def check(self, value):
        if not isinstance(value, dict):
            raise TypeError
        return dict((self.key.check(k), self.inner.check(v)) for k, v in value.items())


class _AsIs(protocol.Field):
    """``inner``'s check, the value kept as written (an integer stays one)."""

    def __init__(self, inner):
        self.inner = inner
        self.optional = inner.optional

    def describe(self):
        return self.inner.describe()

    def check(self, value):
        self.inner.check(value)
        return value


class _Record(protocol.Field):
    """An object with exactly the keys of ``spec`` ({key: field}), each checked."""

    def __init__(self, spec):
        self.spec = dict(spec)

    def describe(self):
        return "an object of %s" % ", ".join(sorted(self.spec))

    def check(self, value):
        if not isinstance(value, dict) or set(value) != set(self.spec):
            raise TypeError
        return dict((k, f.check(value[k])) for k, f in self.spec.items())


#: What ``load_report`` checks in each client entry of a report.json (compare's
#: reader): (key path, field). A path missing or a value outside its field makes
#: the entry bad: it is left out and counted. Keys not named here are kept as
#: they are (JSON types only, never NaN or Infinity): check a key here before
#: compare uses it.
CLIENT_FIELDS = (
    (("client",), NAME),
    (("host",), protocol.Str(max_len=255)),
    (("state",), STATE),
    (("chunk_mib",), FIGURE),
    (("file_mib",), FIGURE),
    (("written_mib",), FIGURE),
    (("sync",), TEXT),
    (("planned_run_s",), FIGURE),
    (("preallocated",), YES_NO),
) + tuple((("throughput_mib_s", k), FIGURE) for k in ("min", "mean", "max", "p50",
                                                       "p95", "p99")) \
  + tuple((("latency_ms", k), FIGURE) for k in ("min", "mean", "max", "p50", "p95",
                                                 "p99"))


class _Object(protocol.Field):
    """A JSON object (its keys and values as they are)."""

    def describe(self):
        return "an object"

    def check(self, value):
        if not isinstance(value, dict):
            raise TypeError
        return value


#: Client keys checked only where an entry has them (a report.json written before
#: the key was): a missing one reads as unknown.
CLIENT_FIELDS_IF_PRESENT = (
    # --verify: what was read back (null: off); compare's plan holds whether it was on
    (("verification",), protocol.Optional(_Object())),
)
#: The same for the run as a whole: a bad one makes the document bad.
RUN_FIELDS = (
    (("run", "label"), TEXT),
    (("run", "exit_code"), EXIT_CODE),
    (("run", "exit_meaning"), TEXT),
    (("run", "interrupted_by"), TEXT),
    (("run", "start_utc"), TEXT),
    (("run", "run_duration_s"), SIGNED),
    (("aggregate", "throughput_mib_s"), SUM),
    (("aggregate", "per_client_mib_s"), protocol.Optional(_MapOf(NAME, FIGURE))),
    (("totals", "client_count"), COUNT),
    (("totals", "written_mib"), SUM),
) + tuple((("totals", "latency_ms", k), FIGURE) for k in ("p50", "p95", "p99", "max"))


class _Bad(ValueError):
    pass


def _finite_float(text):
    value = float(text)
    if math.isinf(value) or math.isnan(value):
        raise ValueError("number %s is too big for a float" % text[:40])
    return value


def _no_constant(name):
    raise ValueError("%s is not a number" % name)


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def strict_json(data):
    """The JSON value of ``data`` (bytes); ValueError saying what is wrong."""
    try:
        text = as_text(data)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text")
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply")
    except ValueError as exc:
        raise ValueError(protocol.clean_text("%s" % exc, 120))


def read_json(path):
    """The JSON object in file ``path``: Unreadable when it cannot be read, is not
    strict JSON or not an object (IOError/OSError pass: the caller names them)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = strict_json(data)
    except ValueError as exc:
        raise Unreadable("%s is not JSON (%s)" % (path, exc))
    if not isinstance(obj, dict):
        raise Unreadable("%s is not a JSON object" % path)
    return obj


def _get(obj, path):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            raise _Bad("'%s' missing" % ".".join(path))
        obj = obj[key]
    return obj


def _check(obj, path, field):
    """Check (and put back, cleaned) the value at ``path``; _Bad if it fails."""
    value = _get(obj, path)
    try:
        value = field.check(value)
    except (TypeError, ValueError):
        raise _Bad("'%s' must be %s" % (".".join(path), field.describe()))
    _get(obj, path[:-1])[path[-1]] = value


def load_report(path, warn):
    """The report dict of report.json ``path`` (compare's reader): raises Unreadable
    for a document that is not a diskbench report.json of this format, or whose
    run figures fail RUN_FIELDS; a client entry that fails CLIENT_FIELDS, or repeats
    a name, is left out and counted in one ``warn``."""
    try:
        rep = read_json(path)
    except (IOError, OSError) as exc:
        raise Unreadable("cannot read %s (%s): give a diskbench log dir or its "
                         "report.json" % (path, getattr(exc, "strerror", None) or exc))
    fmt = rep.get("report_format")
    if not isinstance(fmt, integer_types) or isinstance(fmt, bool) or \
            fmt != build_mod.REPORT_FORMAT:
        raise Unreadable(
            "%s is not a report.json of format %d: re-render its run first with "
            "python -m diskbench.report LOG_DIR" % (path, build_mod.REPORT_FORMAT))
    try:
        for key_path, field in RUN_FIELDS:
            _check(rep, key_path, field)
        if not isinstance(rep.get("clients"), list):
            raise _Bad("'clients' must be a list")
    except _Bad as exc:
        raise Unreadable("%s is damaged: %s; re-render its run with python -m "
                         "diskbench.report LOG_DIR" % (path, exc))
    kept, bad, first, names = [], 0, None, set()
    for entry in rep["clients"]:
        try:
            if not isinstance(entry, dict):
                raise _Bad("an entry is not an object")
            for key_path, field in CLIENT_FIELDS:
                _check(entry, key_path, field)
            for key_path, field in CLIENT_FIELDS_IF_PRESENT:
                if key_path[0] in entry:
                    _check(entry, key_path, field)
            if entry["client"] in names:
                raise _Bad("client %s is listed twice" % entry["client"])
        except _Bad as exc:
            bad += 1
            first = first or "%s" % exc
            continue
        names.add(entry["client"])
        kept.append(entry)
    if bad:
        warn("%s: %d of %d client entries left out, damaged (the first: %s)" % (
            path, bad, len(rep["clients"]), first))
    rep["clients"] = kept
    return rep


def read_marker(path):
    """(run.json's {"run_id", "started_ts"} checked, or {}; why not, or None)."""
    try:
        obj = read_json(path)
    except (IOError, OSError) as exc:
        return {}, "%s" % (getattr(exc, "strerror", None) or exc)
    except Unreadable as exc:
        return {}, "%s" % exc
    out = {}
    for key, field in (("run_id", protocol.Str(max_len=128, min_len=1, strict=True)),
                       ("started_ts", TS)):
        try:
            out[key] = field.check(obj.get(key))
        except (TypeError, ValueError):
            return {}, "%s: '%s' must be %s" % (path, key, field.describe())
    try:   # (not in run.json before 2026-12-07; a damaged one: as if not said)
        out["plan_given"] = _checked(obj.get("plan_given") or {}, PLAN_GIVEN_FIELDS,
                                     "plan_given", optional=True)
    except ValueError:
        out["plan_given"] = {}
    return out, None


#: What rerender keeps from an old report.json's "run" (key, field). A key that
#: fails is left out (as if the server had not said it), with one warning.
OLD_RUN_FIELDS = (
    ("start_ts", TS), ("end_ts", TS), ("label", TEXT), ("interrupted_by", TEXT),
    ("exit_code", EXIT_CODE), ("exit_meaning", TEXT), ("connection_count", OPT_COUNT),
    ("expected_client_count", OPT_COUNT), ("expected_clients", OPT_COUNT),
)


def read_old_report(path, warn):
    """What rerender keeps of an old report.json, checked: {"run": {...}, "states":
    {client: (state, why)}, "rejected": {kind: count} or None}; None when there is
    none or it is unreadable (said in ``warn``)."""
    try:
        rep = read_json(path)
    except (IOError, OSError) as exc:
        if getattr(exc, "errno", None) != errno.ENOENT:   # no report: the usual case
            warn("cannot read %s (%s): its run facts are not kept" % (
                path, getattr(exc, "strerror", None) or exc))
        return None
    except Unreadable as exc:
        warn("%s: its run facts are not kept" % exc)
        return None
    dropped = []
    old_run = rep.get("run") if isinstance(rep.get("run"), dict) else {}
    run = {}
    for key, field in OLD_RUN_FIELDS:
        if key in old_run:
            try:
                run[key] = field.check(old_run[key])
            except (TypeError, ValueError):
                dropped.append(key)
    said = old_run.get("server_warnings")
    if said is not None:
        try:
            if not isinstance(said, list) or len(said) > MAX_WARNINGS:
                raise ValueError
            run["server_warnings"] = [
                protocol.Str(max_len=protocol.TEXT_MAX_CHARS).check(w) for w in said]
        except (TypeError, ValueError):
            dropped.append("server_warnings")
    cpu = old_run.get("server_cpu")
    if isinstance(cpu, dict):
        number = protocol.Optional(protocol.Num(-MAX_FIGURE, MAX_FIGURE))
        run["server_cpu"] = {}
        for key, value in cpu.items():
            try:
                run["server_cpu"][protocol.Str(max_len=128).check(key)] = number.check(value)
            except (TypeError, ValueError):
                dropped.append("server_cpu")
    rejected = rep.get("rejected_messages")
    if rejected is not None:
        try:
            if not isinstance(rejected, dict):
                raise ValueError
            rejected = dict((protocol.Str(max_len=128, strict=True).check(k), COUNT.check(v))
                            for k, v in rejected.items())
        except (TypeError, ValueError):
            dropped.append("rejected_messages")
            rejected = None
    found = {}
    entries = rep.get("clients") if isinstance(rep.get("clients"), list) else []
    for entry in entries:
        try:
            found[NAME.check(entry["client"])] = (STATE.check(entry["state"]),
                                                  TEXT.check(entry.get("state_why")))
        except (TypeError, ValueError, KeyError, AttributeError):
            dropped.append("clients")
    if dropped:
        warn("%s: %d damaged values left out (the first: '%s'); the run facts are taken "
             "from perf.jsonl there" % (path, len(dropped), dropped[0]))
    return dict(run=run, states=found, rejected=rejected)


#: The server's plan in run.json (logdir.write_marker: its flags, as
#: plan.resolve takes them): a chunk list, the other settings, --verify.
PLAN_GIVEN_FIELDS = tuple(
    (k, protocol.Optional(_ListOf(protocol.PLAN_SPEC[k]) if k == "chunk_bytes" else
                          protocol.PLAN_SPEC[k]))
    for k in protocol.PLAN_FIELDS) + ((plan.VERIFY, protocol.Optional(protocol.Bool())),)
FACT_TEXT = protocol.Str(max_len=MAX_FACT_TEXT)
#: run.json's report facts (build.facts), checked like the wire before a
#: re-render applies them: (key, field) of the run's build arguments, its view and
#: each client's (report.CLIENT_FACTS). A key missing, unknown or failing its field
#: makes the facts unusable (rerender then falls back to a re-render without them).
FACT_BUILD_FIELDS = (
    ("run_label", protocol.Optional(FACT_TEXT)), ("interrupted_by", TEXT),
    ("exit_code", EXIT_CODE), ("exit_meaning", TEXT),
    ("warnings", protocol.Optional(_ListOf(FACT_TEXT))),
    ("server_cpu", protocol.Optional(_MapOf(protocol.Str(max_len=128), _AsIs(SIGNED)))))
_FACT_RULES = dict(
    # the run's (clientstate.RunView)
    expected_clients=OPT_COUNT, connections=COUNT,
    rejected=_MapOf(protocol.Str(max_len=128, strict=True), COUNT), restored=COUNT,
    # each client's (clientstate.Client)
    peer=protocol.Optional(protocol.Str(max_len=255)),
    plan=_AsIs(_Record(protocol.PLAN_SPEC)),
    plan_sources=_Record(dict((k, protocol.Str(choices=PLAN_SOURCES))
                              for k in protocol.PLAN_FIELDS)),
    start_at=protocol.Optional(TS), join_order=OPT_COUNT, state=STATE,
    # (not in run.json before 2026-12-07: absent, the start instant was known)
    start_at_unknown=protocol.Optional(protocol.Bool()),
    reason=protocol.Optional(FACT_TEXT), duplicates=COUNT, reconnects=COUNT,
    went_away_count=COUNT, takeovers=COUNT, seq_jumps=COUNT, notes=_ListOf(FACT_TEXT),
    texts_dropped=COUNT)
#: (a fact build.py records without a rule here fails at import: add its rule)
FACT_RUN_FIELDS = tuple((k, _FACT_RULES[k]) for k in build_mod.VIEW_FACTS)
FACT_CLIENT_FIELDS = tuple((k, _FACT_RULES[k]) for k in build_mod.CLIENT_FACTS)


def _checked(obj, fields, where, optional=False):
    """``obj`` (a dict holding exactly the keys of ``fields``, or some of them
    when ``optional``) with each value checked; ValueError naming the first
    key that fails."""
    if not isinstance(obj, dict):
        raise ValueError("'%s' must be an object" % where)
    names = set(k for k, _ in fields)
    extra = sorted(as_text(k) for k in obj if k not in names)
    if extra:
        raise ValueError("'%s' has an unknown key '%s'" % (where, extra[0][:40]))
    out = {}
    for key, field in fields:
        if optional and key not in obj:
            continue
        try:
            out[key] = field.check(obj[key]) if key in obj else _missing(field)
        except (TypeError, ValueError):
            raise ValueError("'%s.%s' must be %s" % (where, key, field.describe()))
    return out


def _missing(field):
    if field.optional:
        return None
    raise ValueError


def check_facts(recorded):
    """run.json's report facts ``recorded`` with every value checked like the
    wire (FACT_*_FIELDS), as ``report.apply_facts`` takes them; ValueError
    saying which value is wrong."""
    if not isinstance(recorded, dict):
        raise ValueError("'%s' must be an object" % build_mod.FACTS_KEY)
    out = {}
    for key in ("start_ts", "end_ts"):
        try:
            out[key] = TS.check(recorded.get(key))
        except (TypeError, ValueError):
            raise ValueError("'%s' must be %s" % (key, TS.describe()))
    out["build"] = _checked(recorded.get("build"), FACT_BUILD_FIELDS, "build")
    out["run"] = _checked(recorded.get("run"), FACT_RUN_FIELDS, "run")
    clients = recorded.get("clients")
    if not isinstance(clients, dict):
        raise ValueError("'clients' must be an object")
    out["clients"] = {}
    for name, facts in clients.items():
        try:
            name = NAME.check(name)
        except (TypeError, ValueError):
            raise ValueError("a client name in 'clients' must be %s" % NAME.describe())
        out["clients"][name] = _checked(facts, FACT_CLIENT_FIELDS, "clients.%s" % name)
    records = recorded.get("records")     # (not in run.json before 2026-12-07)
    if records is not None:
        try:
            out["records"] = _MapOf(NAME, COUNT).check(records)
        except (TypeError, ValueError):
            raise ValueError("'records' must be an object of client names and counts")
    return out
