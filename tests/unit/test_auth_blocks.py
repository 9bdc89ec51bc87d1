"""services.auth.blocks: the users one auth instance learnt were blocked lately, for the edges."""

from services.auth.blocks import RecentBlocks


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_the_list_is_whole_since_the_instance_started_while_that_is_within_the_window():
    clock = Clock()
    blocks = RecentBlocks(clock, window_s=600)
    clock.now += 100

    assert blocks.users() == []
    assert blocks.complete_from() == 1_800_000_000.0


def test_a_block_is_listed_for_the_window_then_forgotten_and_the_list_whole_since_then():
    clock = Clock()
    blocks = RecentBlocks(clock, window_s=600)
    blocks.add("alice")
    clock.now += 300
    blocks.add("bob")

    assert blocks.users() == ["alice", "bob"]
    clock.now += 301
    assert blocks.users() == ["bob"]
    assert blocks.complete_from() == clock.now - 600


def test_a_user_blocked_again_is_listed_once_from_the_later_time():
    clock = Clock()
    blocks = RecentBlocks(clock, window_s=600)
    blocks.add("alice")
    blocks.add("bob")
    clock.now += 500
    blocks.add("alice")
    clock.now += 101

    assert blocks.users() == ["alice"]
