"""Ids: nanoid format, and a deterministic mode that stays inside its generator."""

from __future__ import annotations

import random
import re

from aicoco import IdGenerator

NANOID = re.compile(r"[A-Za-z0-9_-]{21}")


def test_ids_are_nanoids_and_distinct() -> None:
    generator = IdGenerator()
    made = [generator() for _ in range(2000)] + generator.take(2000)
    assert all(NANOID.fullmatch(value) for value in made)
    assert len(set(made)) == len(made)


def test_every_symbol_of_the_alphabet_is_used() -> None:
    symbols = set("".join(IdGenerator(seed=1).take(500)))
    assert len(symbols) == 64


def test_seed_gives_the_same_sequence() -> None:
    first, second = IdGenerator(seed=42), IdGenerator(seed=42)
    assert [first() for _ in range(5)] == [second() for _ in range(5)]
    assert first.take(3) == second.take(3)
    assert IdGenerator(seed=43)() != IdGenerator(seed=42)()


def test_seeding_leaves_the_global_random_alone() -> None:
    """The reference reseeds ``random`` itself; a seeded generator here must not."""
    random.seed(1234)
    expected = [random.random() for _ in range(3)]
    random.seed(1234)
    generator = IdGenerator(seed=0)
    generator.take(10)
    assert [random.random() for _ in range(3)] == expected


def test_unseeded_generators_do_not_repeat_each_other() -> None:
    assert IdGenerator()() != IdGenerator()()


def test_take_zero() -> None:
    assert IdGenerator().take(0) == []
