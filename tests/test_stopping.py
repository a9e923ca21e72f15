"""Stop sequences across token boundaries (pure unit tests)."""

from __future__ import annotations

from inferq.workers.stopping import StopMatcher


def feed_all(stops: tuple[str, ...], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(p) for p in pieces)
    return out + matcher.flush(), matcher.stopped


def test_no_stop_passes_everything() -> None:
    assert feed_all((), ["a", "b"]) == ("ab", False)


def test_stop_inside_one_piece() -> None:
    assert feed_all(("END",), ["abcENDxyz"]) == ("abc", True)


def test_stop_split_across_pieces_is_never_emitted() -> None:
    matcher = StopMatcher(("END",))
    assert matcher.feed("abcE") == "abc"
    assert matcher.feed("N") == ""
    assert matcher.feed("D tail") == ""
    assert matcher.stopped


def test_held_prefix_released_when_it_is_not_a_stop() -> None:
    matcher = StopMatcher(("END",))
    assert matcher.feed("xE") == "x"
    assert matcher.feed("Nx") == "ENx"
    assert matcher.flush() == ""
    assert feed_all(("END",), ["abE"]) == ("abE", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(("yz", "b"), ["abcxyz"]) == ("a", True)
