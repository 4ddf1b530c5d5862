"""The rule of dedup, not an example of it: whatever order seqs arrive in and
however often they are resent, the recorded set is the set of seqs sent.

``SeqSet`` is compared with a plain python set (the model) over every
permutation of small seq lists (exhaustive up to 6 elements, with resends) and
over random longer lists with a fixed seed; the registry's dedup is driven the
same way through ``Registry.accept``.
"""
import itertools
import random

import pytest

from diskbench import protocol
from diskbench import ledger
from diskbench import seqset
from diskbench.seqset import SeqSet
from tests.test_server_fakes import T0
from tests.test_server_units import Peer, _registry

#: Exhaustive checks use the non-empty subsets of 1..SMALL_MAX of at most
#: SMALL_LEN elements, each in every order: gaps of every shape, filled in
#: every order.
SMALL_MAX = 7
SMALL_LEN = 6
#: Random checks: this many lists of up to LONG_LEN seqs drawn from
#: 1..LONG_MAX (many gaps), each seq sent up to RESENDS_MAX times.
RANDOM_CASES = 300
LONG_LEN = 40
LONG_MAX = 80
RESENDS_MAX = 3
SEED = 27


def ranges(seqs):
    """The model: the sorted maximal runs of consecutive seqs, as (start, end)."""
    out = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] + 1 == s:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def small_lists():
    for n in range(1, SMALL_LEN + 1):
        for subset in itertools.combinations(range(1, SMALL_MAX + 1), n):
            for order in itertools.permutations(subset):
                yield list(order)


def random_lists(rng):
    for _ in range(RANDOM_CASES):
        seqs = rng.sample(range(1, LONG_MAX + 1), rng.randint(1, LONG_LEN))
        sent = [s for s in seqs for _ in range(rng.randint(1, RESENDS_MAX))]
        rng.shuffle(sent)
        yield sent


def check_against_model(sent):
    """Add ``sent`` to a SeqSet one by one, checking each step against the model."""
    s, model = SeqSet(), set()
    for seq in sent:
        assert s.add(seq) == (seq not in model), (sent, seq)
        model.add(seq)
        assert list(zip(s.starts, s.ends)) == ranges(model), (sent, seq)
        assert len(s) == len(ranges(model)) and s.high == max(model)
    for probe in range(0, max(model) + 3):
        assert (probe in s) == (probe in model), (sent, probe)
    return s


def test_seqset_every_order_of_small_lists_gives_the_models_ranges():
    """Every permutation of every small seq list (gaps filled out of order)
    gives, at every step, exactly the model set's maximal ranges, its highest
    seq, and its membership; ``add`` says new exactly for unseen seqs."""
    count = 0
    for sent in small_lists():
        check_against_model(sent)
        count += 1
    assert count > 8000   # really exhaustive


def test_seqset_resends_in_any_order_record_each_seq_once():
    """A list sent twice (again in every order, or each seq repeated at once)
    records the same set as sending it once: resends never change the set."""
    for order in itertools.permutations([1, 2, 4, 5, 7, 8]):
        order = list(order)
        once = check_against_model(order)
        for sent in (order + order[::-1], [s for s in order for _ in (0, 1)],
                     order[:3] + order + order[3:]):
            again = check_against_model(sent)
            assert (again.starts, again.ends, again.high) == (once.starts, once.ends, once.high)


def test_seqset_random_long_lists_with_resends_match_the_model():
    """Random orders of longer lists with repeats (fixed seed) match the model."""
    rng = random.Random(SEED)
    for sent in random_lists(rng):
        check_against_model(sent)


def test_seqset_range_cap_degrades_and_never_refuses_a_new_seq(monkeypatch):
    """At MAX_RANGES the set compacts instead of refusing: a later seq (above all
    seen), or any unseen seq while nothing was compacted, is reported new and is a
    member afterwards; every seq added earlier stays a member; the set never holds
    more than the cap. (A compacted gap counts as seen: that is the bounded rule.)"""
    for cap in (2, 3):
        monkeypatch.setattr(seqset, "MAX_RANGES", cap)
        for n in range(1, SMALL_LEN + 1):
            for subset in itertools.combinations(range(1, SMALL_MAX + 1, 2), n):
                for seq in range(0, SMALL_MAX + 3):
                    compacted = len(ranges(set(subset))) > cap
                    if seq in subset or (compacted and seq < max(subset)):
                        continue
                    s = SeqSet()
                    for old in subset:
                        s.add(old)
                    assert s.add(seq), (cap, subset, seq)
                    assert seq in s and all(old in s for old in subset), (cap, subset, seq)
                    assert len(s) <= cap, (cap, subset, seq)


# --- the registry's dedup -----------------------------------------------------------
def _note(name, seq):
    return protocol.make(protocol.NOTE, protocol.C2S, name=name, seq=seq, ts=T0,
                         text="n%d" % seq)


def _registry_run(sent):
    """Send NOTEs with seqs ``sent`` (after the hello, seq 1) to a fresh registry;
    (outcomes, client)."""
    r, _ = _registry()
    p = Peer(r, "a")
    p.hello()
    outcomes = [p.send_msg(_note("a", seq)) for seq in sent]
    return r, p, outcomes, r.clients["a"]


def _check_registry(sent):
    r, p, outcomes, c = _registry_run(sent)
    model, first = set([1]), []
    for seq, outcome in zip(sent, outcomes):
        assert outcome == (ledger.DUPLICATE if seq in model else ledger.NEW), (sent, seq)
        if seq not in model:
            first.append(seq)
        model.add(seq)
    # each seq applied once, in the order it first came
    assert c.notes == ["n%d" % s for s in first], sent
    assert c.duplicates == len(sent) - len(first)
    assert c.last_seq == max(model)
    stranger = r.connection_opened()
    for seq in range(1, max(model) + 3):
        # a seq is a replay from elsewhere exactly when it was recorded
        assert r.is_replay(_note("a", seq), stranger) == (seq in model), (sent, seq)
    return first


def test_registry_dedup_every_order_and_resend_records_the_set_once():
    """Through Registry.accept: every permutation of a seq list with gaps, sent
    once and then resent in another order, applies each seq exactly once (first
    arrival), re-acks the rest as duplicates, and remembers every seq (the
    replay rule) however the gaps were filled."""
    for order in itertools.permutations([2, 3, 5, 6, 8]):
        order = list(order)
        _check_registry(order + order[::-1])
        _check_registry(order[1:] + order[:2] + order)


def test_registry_dedup_random_long_lists_with_resends():
    """Random longer lists with repeats (fixed seed) through the registry."""
    rng = random.Random(SEED)
    for sent in itertools.islice(random_lists(rng), RANDOM_CASES // 6):
        _check_registry([s + 1 for s in sent])   # seq 1 is the hello's


@pytest.mark.parametrize("order", [[3, 2], [4, 2, 3], [6, 2, 4, 3, 5]])
def test_registry_dedup_filling_a_gap_out_of_order_keeps_both_sides(order):
    """Filling the gap between two ranges (the last seq joins them) forgets
    neither side: every earlier seq is still a duplicate afterwards."""
    r, p, outcomes, c = _registry_run(order)
    assert outcomes == [ledger.NEW] * len(order)
    assert [p.send_msg(_note("a", s)) for s in range(1, max(order) + 1)] == \
        [ledger.DUPLICATE] * max(order)
    assert c.messages == len(order) + 1


@pytest.mark.parametrize("since", [0.0, 0.5, 10.0, 3600.0])
def test_registry_seq_jump_bound_grows_with_the_silence_and_a_refused_seq_is_not_kept(
        since):
    """A seq may be at most SEQ_JUMP_BASE + SEQ_RATE_MAX per second of silence
    ahead of the client's highest: at that bound it is recorded, one past it is
    refused as a seq jump, and the refused seq is not remembered (sent again
    within the bound later, it is new)."""
    r, _ = _registry(heartbeat_timeout=1e9)
    p = Peer(r, "a")
    p.hello()                      # seq 1, received at T0
    bound = 1 + ledger.SEQ_JUMP_BASE + int(ledger.SEQ_RATE_MAX * since)
    assert r.accept(_note("a", bound + 1), T0 + since, p.conn) == ledger.SEQ_JUMP
    assert r.accept(_note("a", bound), T0 + since, p.conn) == ledger.NEW
    c = r.clients["a"]
    assert c.seq_jumps == 1 and c.last_seq == bound and (bound + 1) not in c.seen
    # from the new highest, at once: the refused seq is now within the bound
    assert r.accept(_note("a", bound + 1), T0 + since, p.conn) == ledger.NEW
