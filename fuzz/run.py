"""
Fuzz socksd's wire codecs: SOCKS4, SOCKS5 and SOCKS6, server and client
sides.

    python fuzz/run.py --runs 20000          # what `tox -e fuzz` runs
    python fuzz/run.py --runs 0 --seed 7     # the fallback, forever

Each input picks a codec (its first byte), is cut into pieces (by the next
bytes) and fed to the codec's C{receiveData}; a client codec first sends a
valid request, so that the bytes are parsed as replies.  A codec may raise
only L{socksd.errors.MalformedMessage} subclasses: any other exception is a
bug, and the fuzzer stops with it.  Between pieces, a server codec that
parsed a message gets no answer, so parsing pauses as it does in the server;
C{receiveData(b"")} after a piece checks that a paused codec stays
consistent.

With atheris installed (C{pip install atheris}), it runs atheris'
coverage-guided fuzzer for C{--runs} inputs.  Without it, or with
C{--no-atheris}, a seeded random-mutation loop of the same inputs runs
C{--runs} times (the same interface, reproducible with C{--seed}).  Not in
the default test suite.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from ipaddress import IPv4Address

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from socksd.address import Destination  # noqa: E402
from socksd.errors import MalformedMessage  # noqa: E402
from socksd.wire import socks4, socks5, socks6  # noqa: E402

_DESTINATION = Destination(IPv4Address("192.0.2.1"), 80)


def _socks4Client() -> tuple[object, bytes]:
    codec = socks4.Socks4ClientCodec()
    codec.send(socks4.Request(1, _DESTINATION, b"fuzz"))
    return codec, b""


def _socks5Client() -> tuple[object, bytes]:
    codec = socks5.Socks5ClientCodec()
    codec.send(socks5.MethodOffer((0, 2)))
    return codec, b""


def _socks6Client() -> tuple[object, bytes]:
    codec = socks6.Socks6ClientCodec()
    codec.send(socks6.Request(1, _DESTINATION))
    return codec, b""


#: Builders of a fresh codec, ready to parse what the peer sends.
CODECS = [
    lambda: (socks4.Socks4ServerCodec(), b""),
    lambda: (socks5.Socks5ServerCodec(), b""),
    lambda: (socks6.Socks6ServerCodec(), b""),
    _socks4Client,
    _socks5Client,
    _socks6Client,
    lambda: (socks6.Socks6UdpStreamCodec(True), b""),
    lambda: (socks6.Socks6UdpStreamCodec(False), b""),
]

#: Seeds for the mutation loop: valid messages of each protocol.
SEEDS = [
    b"\x00\x04\x01\x00\x50\x7f\x00\x00\x01alice\x00",
    b"\x00\x04\x01\x00\x50\x00\x00\x00\x01\x00example.com\x00",
    b"\x01\x05\x02\x00\x02\x05\x01\x00\x03\x0bexample.com\x00\x50",
    b"\x01\x05\x01\x02\x01\x05alice\x06secret",
    b"\x02\x06\x01\x00\x00\x00\x50\x00\x01\xc0\x00\x02\x01",
    b"\x03\x00\x5a\x00\x50\x7f\x00\x00\x01",
    b"\x04\x05\x00\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x50",
    b"\x05\x06\x00\x00\x00\x06\x00\x00\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x00",
]


def testOneInput(data: bytes) -> None:
    """Feed one input to the codec it names; raise on a bug."""
    if len(data) < 2:
        return
    codec, _ = CODECS[data[0] % len(CODECS)]()
    cuts = data[1] % 8
    body = data[2 + cuts :]
    points = sorted({0, len(body), *(c * len(body) // 256 for c in data[2 : 2 + cuts])})
    for start, end in zip(points, points[1:]):
        try:
            codec.receiveData(body[start:end])
            codec.receiveData(b"")
        except MalformedMessage:
            try:
                codec.receiveData(b"")
            except MalformedMessage:
                return
            raise AssertionError("a dead codec parsed again") from None


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """One random mutation: flip, insert, delete, duplicate or splice."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        position = rng.randrange(len(buffer) + 1)
        if choice == 0 and buffer:
            buffer[position % len(buffer)] = rng.randrange(256)
        elif choice == 1:
            buffer[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice == 2 and buffer:
            del buffer[position : position + rng.randint(1, 8)]
        elif choice == 3:
            buffer[position:position] = buffer[position : position + rng.randint(1, 32)]
        else:
            other = rng.choice(SEEDS)
            buffer[position:] = other[rng.randrange(len(other)) :]
    return bytes(buffer[:4096])


def mutationLoop(runs: int, seed: int) -> None:
    """The fallback: C{runs} seeded random mutations (0: forever)."""
    rng = random.Random(seed)
    corpus = list(SEEDS)
    done = 0
    while runs == 0 or done < runs:
        data = _mutate(rng, rng.choice(corpus))
        testOneInput(data)
        if len(corpus) < 1000 and rng.random() < 0.05:
            corpus.append(data)
        done += 1
    print(f"fuzz: {done} inputs, seed {seed}, no bug found")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20000, help="inputs to try (0: forever)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fallback loop")
    parser.add_argument("--no-atheris", action="store_true", help="use the fallback loop")
    args = parser.parse_args(argv)
    if args.runs < 0:
        parser.error("--runs cannot be negative")
    try:
        if args.no_atheris:
            raise ImportError("--no-atheris")
        import atheris
    except ImportError:
        mutationLoop(args.runs, args.seed)
        return 0
    import tempfile

    atheris.instrument_all()
    # libFuzzer adds to its corpus directory: a temporary one, not the tree.
    seeds = tempfile.mkdtemp(prefix="socksd-fuzz-")
    import atexit
    import shutil

    atexit.register(shutil.rmtree, seeds, True)
    for index, seed in enumerate(SEEDS):
        with open(os.path.join(seeds, f"seed{index}"), "wb") as out:
            out.write(seed)
    atheris.Setup(
        [sys.argv[0], f"-runs={args.runs}", f"-seed={args.seed or 1}", "-max_len=4096", seeds],
        testOneInput,
    )
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
