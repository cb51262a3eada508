"""Client text checks: NFC, trimmed, bounded, no control characters; a 422
that names the field."""

from __future__ import annotations

import pytest
from social_common.errors import FieldError, Problem
from social_common.validation import clean_text, field_error


def _refusal(value: str, maximum: int = 10, keep: str = "\n") -> Problem:
    with pytest.raises(Problem) as caught:
        clean_text("caption", value, maximum, keep)
    return caught.value


def test_field_error_is_a_422_naming_the_field_and_why() -> None:
    problem = field_error("username", "already taken")
    assert problem.status == 422
    assert problem.code == "validation_failed"
    assert problem.detail == "username: already taken."
    assert problem.errors == [{"field": "username", "message": "already taken"}]
    document = problem.document("req-1")
    assert document.errors == [FieldError("username", "already taken")]
    assert document.request_id == "req-1"


def test_field_error_may_carry_its_own_code() -> None:
    problem = field_error("password", "too common", code="weak_password")
    assert (problem.status, problem.code) == (422, "weak_password")


def test_text_is_trimmed_and_nfc_normalized() -> None:
    # "e" + COMBINING ACUTE ACCENT becomes the one character "é".
    assert clean_text("caption", "  cafe\u0301 \n", 10) == "caf\u00e9"
    assert clean_text("caption", "\u212b", 10) == "\u00c5"  # ANGSTROM SIGN -> A WITH RING


def test_the_maximum_counts_characters_after_normalizing_and_trimming() -> None:
    # Ten code points before NFC, five after; blanks around do not count.
    assert clean_text("caption", "   " + "e\u0301" * 5 + "   ", 5) == "\u00e9" * 5
    assert clean_text("caption", "x" * 10, 10) == "x" * 10


def test_text_over_the_maximum_is_refused() -> None:
    problem = _refusal("x" * 11)
    assert (problem.status, problem.code) == (422, "validation_failed")
    assert problem.errors == [{"field": "caption", "message": "at most 10 characters"}]


@pytest.mark.parametrize("control", ["\x00", "\t", "\r", "\x1b", "\x7f", "\x85"])
def test_control_characters_are_refused(control: str) -> None:
    problem = _refusal(f"a{control}b")
    assert problem.status == 422
    assert problem.errors == [{"field": "caption", "message": "control characters are not allowed"}]


def test_newlines_are_kept_by_default_and_keep_chooses_which_controls_pass() -> None:
    assert clean_text("caption", "a\nb", 10) == "a\nb"
    assert clean_text("caption", "a\tb", 10, keep="\t") == "a\tb"
    # Keeping tabs only refuses newlines.
    assert _refusal("a\nb", keep="\t").errors[0]["message"] == "control characters are not allowed"


def test_format_characters_are_no_controls() -> None:
    # ZERO WIDTH JOINER (in emoji sequences) and a right-to-left mark are Cf, not Cc.
    family = "\U0001f469\u200d\U0001f467"
    assert clean_text("caption", family, 10) == family
    assert clean_text("caption", "\u200fabc", 10) == "\u200fabc"
