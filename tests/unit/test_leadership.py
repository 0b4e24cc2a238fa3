"""The leadership that gates background work: terms, and who may write."""

from __future__ import annotations

from deploy_service.reconciler.leadership import Leadership


def test_a_new_leadership_does_not_lead_until_it_gains() -> None:
    leadership = Leadership()
    assert not leadership.leading()
    assert leadership.term() is None
    assert not leadership.holds(None)
    leadership.gain()
    assert leadership.leading()
    assert leadership.holds(leadership.term())


def test_work_of_an_ended_term_may_not_write_even_after_leading_again() -> None:
    leadership = Leadership(leading=True)
    first = leadership.term()
    leadership.gain()  # still the same term: gaining while leading changes nothing
    assert leadership.term() == first
    leadership.lose()
    assert not leadership.holds(first)
    leadership.gain()
    assert leadership.leading()
    assert leadership.term() != first
    assert not leadership.holds(first)
