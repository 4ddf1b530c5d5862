"""Fuzz the decoder: >= 100k random and mutated lines, zero unhandled exceptions.

A seeded generator (the same on Python 2.7 and 3, no hypothesis needed) mutates
valid messages of every type (byte flips, truncation, splices, type swaps of
fields, hostile values) and adds random JSON. Every line must either decode to
a valid Message or raise ProtocolError: anything else is a crash the server
would have to survive.
"""
from __future__ import print_function

import json
import random

from diskbench import protocol as P
from diskbench.compat import as_bytes
from tests.test_protocol import SAMPLE, build

ITERATIONS = 100000
SEED = 20261123

HOSTILE_VALUES = [None, True, False, 0, -1, 2 ** 64, -2 ** 63, 1e308, -1e308, 0.5,
                  "", "x" * 5000, u"\u202e\u0000", "\n", [], {}, [[1, 2]], {"a": 1},
                  [[-1, 1]], [[1, 2, 3]], "NaN", 1.7976931348623157e308]


def _valid_lines():
    lines = []
    for direction in (P.C2S, P.S2C):
        for type_ in SAMPLE[direction]:
            lines.append((direction, P.encode(build(type_, direction))))
    return lines


def _mutate_bytes(rng, line):
    data = bytearray(line)
    for _ in range(rng.randint(1, 8)):
        op = rng.randint(0, 4)
        if not data:
            break
        pos = rng.randrange(len(data))
        if op == 0:
            data[pos] = rng.randrange(256)
        elif op == 1:
            del data[pos:pos + rng.randint(1, 20)]
        elif op == 2:
            data[pos:pos] = bytearray(rng.randrange(256) for _ in range(rng.randint(1, 10)))
        elif op == 3:
            data = data[:pos]
        else:
            other = bytearray(data)
            data[pos:pos] = other[rng.randrange(len(other)):]
    return bytes(data)


def _mutate_json(rng, line):
    obj = json.loads(line.decode("ascii"))
    target = obj if rng.random() < 0.3 or not obj.get("data") else obj["data"]
    keys = list(target)
    op = rng.randint(0, 3)
    if op == 0 and keys:
        target[rng.choice(keys)] = rng.choice(HOSTILE_VALUES)
    elif op == 1 and keys:
        del target[rng.choice(keys)]
    elif op == 2:
        target[rng.choice(["zz", "mac", "seq", "v", "type", u"\u00e9"])] = rng.choice(
            HOSTILE_VALUES)
    else:
        obj = rng.choice(HOSTILE_VALUES + [obj, [obj], {"data": obj}])
    return as_bytes(json.dumps(obj))


def _random_json(rng, depth=0):
    kind = rng.randint(0, 5 if depth < 4 else 2)
    if kind == 0:
        return rng.choice(HOSTILE_VALUES)
    if kind == 1:
        return rng.random() * 10 ** rng.randint(-5, 20)
    if kind == 2:
        return u"".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(0, 12)))
    if kind == 3:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return dict((rng.choice(["v", "type", "name", "seq", "ts", "data", "mac", "k"]),
                 _random_json(rng, depth + 1)) for _ in range(rng.randint(0, 7)))


def test_fuzz_decoder_never_crashes():
    rng = random.Random(SEED)
    valid = _valid_lines()
    outcomes = {"accepted": 0, "refused": 0}
    kinds = {}
    for i in range(ITERATIONS):
        direction, line = rng.choice(valid)
        pick = i % 4
        if pick == 0:
            line = _mutate_bytes(rng, line)
        elif pick == 1:
            line = _mutate_json(rng, line)
        elif pick == 2:
            line = as_bytes(json.dumps(_random_json(rng)))
        secret = "k" if i % 7 == 0 else None
        if secret and rng.random() < 0.5:
            line = P.encode(P.decode(line, direction), secret=secret) if pick == 3 else line
        try:
            msg = P.decode(line, direction, secret=secret)
        except P.ProtocolError as err:
            outcomes["refused"] += 1
            kinds[err.kind] = kinds.get(err.kind, 0) + 1
            assert err.reason  # every refusal says why
        else:
            outcomes["accepted"] += 1
            assert msg.type in P.SPECS[direction]
            P.encode(msg)  # whatever is accepted can be encoded again
    print("fuzz: %d lines decoded: %d accepted, %d refused %s" % (
        ITERATIONS, outcomes["accepted"], outcomes["refused"], sorted(kinds.items())))
    assert outcomes["accepted"] + outcomes["refused"] == ITERATIONS
    assert outcomes["accepted"] > ITERATIONS // 10 and outcomes["refused"] > ITERATIONS // 2
