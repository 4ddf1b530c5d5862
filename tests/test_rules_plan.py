"""The run plan's rules, table-driven (diskbench/plan.py and the registry):

- precedence for every setting: the client's own command line, then the
  server's plan, then the default (a hello that does not say what it fixed
  fixes everything); a file size nobody gave follows the chunk it will write;
- the server's chunk list handed out in order of arrival (wrapping round),
  counted over accepted clients only, whatever their names;
- the two-rollover rule at its bound, and the fixes it names really pass it.
"""
import itertools
import math

import pytest

from diskbench import plan, protocol
from diskbench.metrics import MIB
from diskbench.server import registry as reg
from diskbench import ledger
from tests.test_server_fakes import T0, hello_fields
from tests.test_server_units import Peer, _registry

#: A value of each setting that differs from its default, as the client's own
#: and as the server's.
OWN = dict(chunk_bytes=30 * MIB, file_bytes=300 * MIB, duration_s=11.0,
           perf_interval_s=0.7, stats_interval_s=3.0, heartbeat_interval_s=2.0)
SERVER = dict(chunk_bytes=[40 * MIB], file_bytes=400 * MIB, duration_s=22.0,
              perf_interval_s=0.9, stats_interval_s=4.0, heartbeat_interval_s=3.0)
#: Speeds, durations and file sizes the two-rollover rule is tried over.
SPEEDS = (1.0, 7.0, 95.5, 100.0, 333.0, 2000.0)
DURATIONS = (1.0, 2.5, 10.0, 60.0)
FILE_MBS = (10, 64, 100, 1000)


def _expected(key, fixed, has_own, has_server, values):
    """The rule, spelled out for one setting: (value, source)."""
    if fixed and has_own:
        return OWN[key], plan.FROM_CLIENT
    if has_server:
        return (SERVER[key][0] if key == "chunk_bytes" else SERVER[key]), plan.FROM_SERVER
    if key == "file_bytes":   # nobody gave one: ten chunks of the chunk it writes
        return plan.FILE_CHUNKS * values["chunk_bytes"], plan.FROM_DEFAULT
    return (OWN[key] if has_own else plan.defaults()[key]), plan.FROM_DEFAULT


@pytest.mark.parametrize("key", protocol.PLAN_FIELDS)
def test_plan_precedence_client_flag_then_server_then_default_for_every_setting(key):
    """For each setting and each combination of (the client fixed it on its
    command line, the client has a value, the server's plan has one), the
    value and its source follow client flag > server plan > default."""
    for fixed, has_own, has_server in itertools.product((True, False), repeat=3):
        own = dict(OWN) if has_own else dict((k, OWN[k]) for k in OWN if k != key)
        server = dict((k, SERVER[k]) for k in SERVER if has_server or k != key)
        values, sources = plan.resolve(own, [key] if fixed else [], server, 0)
        want = _expected(key, fixed, has_own, has_server, values)
        assert (values[key], sources[key]) == want, (key, fixed, has_own, has_server)


def test_plan_a_hello_that_does_not_say_what_it_fixed_fixes_everything():
    """fixed=None (an older or simulated client): every value it sent is its
    own and wins over the server's plan; the ones it did not send come from
    the server."""
    for n in range(len(protocol.PLAN_FIELDS) + 1):
        for sent in itertools.combinations(protocol.PLAN_FIELDS, n):
            own = dict((k, OWN[k]) for k in sent)
            values, sources = plan.resolve(own, None, SERVER, 0)
            for key in protocol.PLAN_FIELDS:
                if key in sent:
                    assert (values[key], sources[key]) == (OWN[key], plan.FROM_CLIENT)
                else:
                    assert sources[key] == plan.FROM_SERVER, (sent, key)


@pytest.mark.parametrize("chunk_mb", [10, 20, 80, 640])
def test_plan_default_file_size_follows_the_chunk_it_will_write(chunk_mb):
    """With no file size from anyone, the file is FILE_CHUNKS of the chunk the
    client will write, wherever that chunk came from."""
    for own_chunk, server_chunks, fixed in (
            (chunk_mb * MIB, [], ["chunk_bytes"]),
            (10 * MIB, [chunk_mb * MIB], []),
            (chunk_mb * MIB, [], [])):
        values, sources = plan.resolve(dict(chunk_bytes=own_chunk), fixed,
                                       dict(chunk_bytes=server_chunks), 0)
        assert values["chunk_bytes"] == chunk_mb * MIB
        assert values["file_bytes"] == plan.FILE_CHUNKS * chunk_mb * MIB
        assert sources["file_bytes"] == plan.FROM_DEFAULT


@pytest.mark.parametrize("sizes", [[10], [10, 20], [30, 10, 20], [80, 40, 20, 10]])
def test_plan_chunk_list_is_handed_out_in_order_of_arrival_wrapping_round(sizes):
    """The index-th client to say hello writes sizes[index % len(sizes)]."""
    server = dict(chunk_bytes=[s * MIB for s in sizes])
    for index in range(3 * len(sizes) + 1):
        values, sources = plan.resolve(dict(chunk_bytes=10 * MIB), [], server, index)
        assert values["chunk_bytes"] == sizes[index % len(sizes)] * MIB, index
        assert sources["chunk_bytes"] == plan.FROM_SERVER


def _hello(r, name, pid, **over):
    p = Peer(r, name, pid=pid)
    m = p.msg(protocol.HELLO, **hello_fields(pid=pid, fixed=[], chunk_bytes=10 * MIB,
                                             **over))
    outcome = r.hello(m, T0, p.conn, "peer", p.sender)
    return outcome[0]


@pytest.mark.parametrize("names", [("a", "b", "c", "d", "e"), ("e", "d", "c", "b", "a"),
                                   ("m", "z", "a", "q", "b")])
def test_registry_hands_the_chunk_list_out_by_hello_order_not_by_name(names):
    """In the registry: sizes go by the order hellos came (not names), a
    refused hello takes no size, and a client saying hello again keeps its
    own."""
    sizes = [10, 20, 40]
    r, _ = _registry(plan_given=dict(chunk_bytes=[s * MIB for s in sizes],
                                     file_bytes=400 * MIB, duration_s=60.0))
    for i, name in enumerate(names):
        if i == 2:   # a client too slow for the plan is refused: takes no size
            assert _hello(r, "slow", 99, calibration_mib_s=1.0) == reg.REJECT
        assert _hello(r, name, i + 1) == ledger.NEW
        if i == 3:   # the first client again (a reconnect): no new size
            assert _hello(r, names[0], 1) == ledger.DUPLICATE
    got = [r.clients[n].plan["chunk_bytes"] // MIB for n in names]
    assert got == [sizes[i % len(sizes)] for i in range(len(names))]
    assert [r.clients[n].join_order for n in names] == list(range(1, len(names) + 1))


def _cases():
    for mib_s, duration, file_mb in itertools.product(SPEEDS, DURATIONS, FILE_MBS):
        yield mib_s, duration, file_mb


#: (MiB/s, duration s, file MiB) giving exactly MIN_ROLLOVERS in binary floats.
EXACT_BOUND = ((100.0, 20.0, 1000), (50.0, 4.0, 100), (1.0, 20.0, 10), (256.0, 0.5, 64))


def test_rollover_rule_passes_exactly_at_min_rollovers_and_never_rounds_up():
    """The rule passes when speed x duration / file size >= MIN_ROLLOVERS (at
    the bound included) and refuses just below; the figure it prints is
    rounded down, never up to the minimum."""
    for mib_s, duration, file_mb in EXACT_BOUND:
        assert mib_s * duration / file_mb == plan.MIN_ROLLOVERS
        assert plan.rollover_rule(mib_s, duration, file_mb, 10) is None
    for mib_s, duration, file_mb in list(_cases()) + list(EXACT_BOUND):
        got = mib_s * duration / float(file_mb)
        assert (plan.rollover_rule(mib_s, duration, file_mb, 10) is None) == \
            (got >= plan.MIN_ROLLOVERS), (mib_s, duration, file_mb)
        below = plan.MIN_ROLLOVERS * file_mb / mib_s * (1 - 1e-3)
        why = plan.rollover_rule(mib_s, below, file_mb, 10)
        assert why is not None, (mib_s, file_mb)
        shown = float(why.split("~")[1].split(" ")[0])
        assert shown < plan.MIN_ROLLOVERS and shown <= below * mib_s / file_mb
        assert plan.expected_rollovers(mib_s, below, file_mb) < plan.MIN_ROLLOVERS


def test_rollover_rule_fixes_it_names_pass_the_rule_and_are_the_tightest():
    """Every refusal names fixes that pass the rule: the smallest whole
    --duration that does (one second less does not) and the largest --file-mb
    of whole chunks that does (one chunk more does not), the latter only when
    it is at least a chunk."""
    chunk_mb = 10
    for mib_s, duration, file_mb in _cases():
        why = plan.rollover_rule(mib_s, duration, file_mb, chunk_mb)
        if why is None:
            continue
        need = int(why.split("--duration >= ")[1].split(" ")[0])
        assert plan.rollover_rule(mib_s, need, file_mb, chunk_mb) is None
        assert plan.rollover_rule(mib_s, need - 1, file_mb, chunk_mb) is not None
        max_file = int(math.floor(mib_s * duration / plan.MIN_ROLLOVERS))
        max_file -= max_file % chunk_mb
        if max_file >= chunk_mb:
            named = int(why.split("--file-mb <= ")[1].split(" ")[0].rstrip(")"))
            assert named == max_file and plan.size_problem(
                chunk_mb * MIB, named * MIB) is None
            assert plan.rollover_rule(mib_s, duration, named, chunk_mb) is None
            assert plan.rollover_rule(mib_s, duration, named + chunk_mb,
                                      chunk_mb) is not None
        else:
            assert "--file-mb" not in why


def _flag_value(field):
    """A plan setting's default as its command-line flag spells it (MiB for sizes)."""
    value = plan.defaults()[field]
    return "%d" % (value // MIB) if field in ("chunk_bytes", "file_bytes") else "%g" % value


def test_client_command_line_fixes_exactly_the_settings_it_gives():
    """For every subset of the plan's flags on a client's command line (each
    given at its default value, which still counts as given), the hello's
    ``fixed`` is exactly those settings; the others take their defaults in
    the flags' units, the file size left to follow the chunk."""
    from diskbench.client import __main__ as client_main
    for n in range(len(protocol.PLAN_FIELDS) + 1):
        for given in itertools.combinations(protocol.PLAN_FIELDS, n):
            argv = ["--server", "127.0.0.1:1", "/tmp/dir"]
            for field in given:
                argv += [plan.FLAGS[field], _flag_value(field)]
            args = client_main.build_parser().parse_args(argv)
            fixed = client_main._take_plan_defaults(args)
            assert sorted(fixed) == sorted(given), argv
            for field in protocol.PLAN_FIELDS:
                value = getattr(args, plan.arg_dest(field))
                if field == "file_bytes" and field not in given:
                    assert value is None
                else:
                    assert "%g" % value == _flag_value(field), (argv, field)


def test_a_file_is_a_whole_number_of_chunks_on_every_command_line():
    """Every write is one chunk and is counted and timed as one: a file size
    that is not a whole number of chunks (its last write shorter) is refused
    with sizes that fit, for one size and for a server's chunk list, and a
    rollover fix never proposes one."""
    assert plan.size_problem(10 * MIB, 30 * MIB) is None
    said = plan.size_problem(10 * MIB, 15 * MIB)
    assert "not a whole number of 10 MiB chunks" in said and "use --file-mb 10 or 20" in said
    assert plan.chunk_list_problem([10, 20, 40], 400) is None
    said = plan.chunk_list_problem([10, 20, 40], 100)
    assert "use --file-mb 80 or 120" in said, said
    assert "smaller than --chunk-mb 40" in plan.chunk_list_problem([10, 20, 40], 30)
    for mib_s in (7.0, 33.0, 101.0):
        msg = plan.rollover_rule(mib_s, 10, 1000, 20)
        fixed = int(msg.split("--file-mb <= ")[1].split()[0])
        assert fixed % 20 == 0 and plan.size_problem(20 * MIB, fixed * MIB) is None, msg
