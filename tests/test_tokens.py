"""Signed link tokens: the fast signing path makes itsdangerous's tokens, and every token
made before it (by itsdangerous itself) keeps verifying."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer

from course.models import new_public_id
from course.tokens import FAST_PAYLOAD_BYTES, PURPOSES, InvalidToken, Signer

OLD, NEW = "an-older-key-" + "o" * 40, "the-newest-key-" + "n" * 40
UNTIMED = [p for p in PURPOSES if p != "confirm"]


def itsdangerous_token(purpose: str, payload: list[object], key: str = NEW) -> str:
    """A token as the code before the fast path made it: itsdangerous, newest key."""
    return str(URLSafeSerializer([key], salt=f"course.{purpose}").dumps(payload))


public_ids = st.builds(lambda _: new_public_id(), st.integers())
payloads = st.tuples(
    public_ids,
    st.one_of(
        st.tuples(),
        st.tuples(st.integers(0, 10_000)),
        st.tuples(st.integers(0, 100), st.sampled_from(["lighter", "same", "stirred"])),
    ),
).map(lambda t: [t[0], *t[1]])


@settings(max_examples=300, deadline=None)
@given(purpose=st.sampled_from(UNTIMED), payload=payloads)
def test_the_fast_path_makes_itsdangerous_tokens_byte_for_byte(
    purpose: str, payload: list[object]
) -> None:
    signer = Signer([OLD, NEW])
    token = signer.dumps(purpose, *payload)
    assert token == itsdangerous_token(purpose, payload)
    assert signer.loads(purpose, token) == payload


@pytest.mark.parametrize("purpose", UNTIMED)
def test_tokens_made_before_keep_verifying_also_with_an_older_key(purpose: str) -> None:
    signer = Signer([OLD, NEW])
    pid = new_public_id()
    for key in (OLD, NEW):
        assert signer.loads(purpose, itsdangerous_token(purpose, [pid, 4], key)) == [pid, 4]
    # Another purpose's token, or one signed with a key we do not have, is refused.
    other = "view" if purpose != "view" else "done"
    with pytest.raises(InvalidToken):
        signer.loads(purpose, itsdangerous_token(other, [pid, 4]))
    with pytest.raises(InvalidToken):
        signer.loads(purpose, itsdangerous_token(purpose, [pid, 4], "k" * 40))


def test_long_and_repetitive_payloads_go_through_itsdangerous_and_verify() -> None:
    signer = Signer([NEW])
    long_payload = ["x" * FAST_PAYLOAD_BYTES, 1]  # compresses: itsdangerous's "." form
    token = signer.dumps("view", *long_payload)
    assert token.startswith(".") and token == itsdangerous_token("view", long_payload)
    assert signer.loads("view", token) == long_payload


def test_a_tampered_fast_token_is_refused() -> None:
    signer = Signer([NEW])
    token = signer.dumps("unsubscribe", new_public_id())
    value, signature = token.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    with pytest.raises(InvalidToken):
        signer.loads("unsubscribe", f"{value}.{flipped}")
