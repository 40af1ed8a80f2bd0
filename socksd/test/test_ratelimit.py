"""
Tests for L{socksd.ratelimit}: token buckets on a fake clock.
"""

from __future__ import annotations

import gc

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socksd.ratelimit import BucketRegistry, TokenBucket


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket} lets C{rate} bytes a second through, in bursts of up to
    C{burst}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.bucket = TokenBucket(rate=1000, burst=4000, clock=self.clock)

    def test_startsFull(self) -> None:
        """
        A new bucket allows a whole burst at once, and no more.
        """
        self.assertEqual(self.bucket.available, 4000)
        self.assertTrue(self.bucket.full)
        self.assertEqual(self.bucket.take(5000), 4000)
        self.assertEqual(self.bucket.take(1), 0)
        self.assertFalse(self.bucket.full)

    def test_refillsAtRate(self) -> None:
        """
        Credit comes back at C{rate} bytes per second, up to C{burst}.
        """
        self.bucket.take(4000)
        self.clock.advance(0.5)
        self.assertEqual(self.bucket.take(10000), 500)
        self.clock.advance(100)
        self.assertEqual(self.bucket.take(10000), 4000)

    def test_partialTake(self) -> None:
        """
        L{TokenBucket.take} returns the part of a chunk that may go now and
        spends only that.
        """
        self.assertEqual(self.bucket.take(1500), 1500)
        self.assertEqual(self.bucket.take(3000), 2500)
        self.assertEqual(self.bucket.take(0), 0)

    def test_fractions(self) -> None:
        """
        Fractions of a byte accumulate instead of being lost.
        """
        bucket = TokenBucket(rate=3, burst=10, clock=self.clock)
        bucket.take(10)
        total = 0
        for _ in range(10):
            self.clock.advance(0.1)
            total += bucket.take(100)
        self.assertEqual(total, 3)

    def test_delayFor(self) -> None:
        """
        L{TokenBucket.delayFor} says how long until C{n} bytes are available:
        0 when they are, and at most the time to fill the bucket.
        """
        self.assertEqual(self.bucket.delayFor(4000), 0.0)
        self.bucket.take(4000)
        self.assertAlmostEqual(self.bucket.delayFor(500), 0.5)
        self.assertAlmostEqual(self.bucket.delayFor(10000), 4.0)
        self.clock.advance(self.bucket.delayFor(500))
        self.assertEqual(self.bucket.take(500), 500)
        self.assertEqual(self.bucket.delayFor(0), 0.0)

    def test_steadyRate(self) -> None:
        """
        A sender that always waits C{delayFor} moves C{rate} bytes a second
        once its burst is spent.
        """
        sent = self.bucket.take(4000)
        start = self.clock.seconds()
        while sent < 14000:
            self.clock.advance(self.bucket.delayFor(1000))
            sent += self.bucket.take(1000)
        self.assertEqual(sent, 14000)
        self.assertAlmostEqual(self.clock.seconds() - start, 10.0)

    def test_badParameters(self) -> None:
        """
        Rates and bursts that are not positive, and negative sizes, are
        refused.
        """
        for rate, burst in [
            (0, 1),
            (-1, 1),
            (float("inf"), 1),
            (float("nan"), 1),
            (1, 0),
            (1, 1.5),
            (True, 1),
        ]:
            self.assertRaises(ValueError, TokenBucket, rate, burst, self.clock)
        self.assertRaises(ValueError, self.bucket.take, -1)
        self.assertRaises(ValueError, self.bucket.delayFor, -1)


class BucketRegistryTests(SynchronousTestCase):
    """
    L{BucketRegistry} shares one bucket per key and forgets idle ones.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = BucketRegistry(rate=100, burst=1000, clock=self.clock)

    def test_shared(self) -> None:
        """
        The same key gets the same bucket, so tunnels share the limit;
        another key gets its own.
        """
        alice = self.registry.bucketFor("alice")
        self.assertIs(self.registry.bucketFor("alice"), alice)
        alice.take(1000)
        self.assertEqual(self.registry.bucketFor("alice").take(1), 0)
        self.assertEqual(self.registry.bucketFor("bob").take(1000), 1000)
        self.assertEqual((alice.rate, alice.burst), (100, 1000))

    def test_drainedBucketRemembered(self) -> None:
        """
        A bucket nobody holds is remembered while it is not full, so a
        client cannot reset its limit by reconnecting.
        """
        self.registry.bucketFor(("192.0.2.7",)).take(1000)
        gc.collect()
        self.registry.prune()
        self.assertEqual(self.registry.bucketFor(("192.0.2.7",)).take(1000), 0)

    def test_bounded(self) -> None:
        """
        Buckets that nobody holds and that have refilled are forgotten, so
        many keys over time do not grow the registry without bound.
        """
        for n in range(1000):
            self.registry.bucketFor(n).take(10)
            self.clock.advance(1)
        gc.collect()
        self.assertLessEqual(len(self.registry), 2 * BucketRegistry.PRUNE_AT)
        self.clock.advance(10)
        self.registry.prune()
        gc.collect()
        self.assertEqual(len(self.registry), 0)

    def test_heldBucketKept(self) -> None:
        """
        A bucket a tunnel still holds stays the key's bucket even when it is
        full and pruned.
        """
        held = self.registry.bucketFor("alice")
        self.registry.prune()
        self.assertIs(self.registry.bucketFor("alice"), held)
        self.assertEqual(len(self.registry), 1)

    def test_badParameters(self) -> None:
        """
        A registry with an impossible rate is refused at once.
        """
        self.assertRaises(ValueError, BucketRegistry, 0, 10, self.clock)
