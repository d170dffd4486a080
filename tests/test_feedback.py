"""course.feedback: bounces (DSNs and the plain-text kinds), complaints (ARF, JMRP),
automatic replies and replies, classified from raw messages.

The samples in tests/samples/feedback/ are written after the RFCs and the shapes big
providers and MTAs are documented to send, with example.* addresses only. Every sample has
an expectation below, and every expectation is checked field by field.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course.feedback import (
    MAX_DIAGNOSTIC,
    MAX_TEXT,
    Feedback,
    FeedbackKind,
    is_hard_status,
    parse_feedback,
)

SAMPLES = Path(__file__).parent / "samples" / "feedback"

HARD = FeedbackKind.HARD_BOUNCE
SOFT = FeedbackKind.SOFT_BOUNCE
COMPLAINT = FeedbackKind.COMPLAINT
AUTO = FeedbackKind.AUTO_REPLY
REPLY = FeedbackKind.REPLY
UNKNOWN = FeedbackKind.UNKNOWN


def mid(kind: str, public_id: str) -> str:
    """One of our Message-IDs, in the engine's form."""
    return f"<{kind}.{public_id}@course.harbor.example.org>"


READER = "Qx7pZ1aB2cD3eF4gH5iJ6k"
COURSE = ("course@harbor.example.org",)


@dataclass(frozen=True)
class Expect:
    kind: FeedbackKind
    recipients: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    addressed_to: tuple[str, ...] = COURSE
    status: str | None = None
    feedback_type: str | None = None
    diagnostic: str | None = None  # a part of it (None: no diagnostic at all)
    text: str | None = None  # exactly (REPLY only)
    subject: str | None = None
    more_ids: bool = False  # message_ids may go on after the expected ones


EXPECTED: dict[str, Expect] = {
    # -- Bounces, RFC 3464 -------------------------------------------------------------
    "postfix_hard_5.1.1.eml": Expect(
        HARD,
        ("nobody@example.com",),  # Original-Recipient, lower-cased
        (mid("lesson-3", READER),),  # from the text/rfc822-headers part
        ("bounces+d2s.4f1c9a07be@harbor.example.org",),
        status="5.1.1",
        diagnostic="550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown",
        subject="Undelivered Mail Returned to Sender",
    ),
    "gmail_hard_5.1.1.eml": Expect(
        HARD,
        ("no.such.reader@example.org",),
        (mid("confirm-1", READER),),  # returned headers, X-Original-Message-ID, In-Reply-To
        status="5.1.1",
        # The continuation prefixes of the multi-line reply are gone.
        diagnostic="550 5.1.1 The email account that you tried to reach does not exist. "
        "Please try double-checking",
        subject="Delivery Status Notification (Failure)",
    ),
    "outlook_hard_5.1.10.eml": Expect(
        HARD,
        ("former.reader@example.org",),
        (mid("lesson-5", "Rt8qW2xY3zA4bC5dE6fG7h"),),
        ("bounces+d2t.0a9b8c7d6e@harbor.example.org",),
        status="5.1.10",
        diagnostic="RESOLVER.ADR.RecipientNotFound",
        subject="Undeliverable: Lesson 5: Letting thoughts pass",
    ),
    "sendmail_generic_user_unknown.eml": Expect(
        HARD,  # Status 5.0.0 says nothing; the text says there is no such user
        ("moved.away@example.net",),
        (mid("lesson-8", "Lk3jH5gF7dS9aQ1wE3rT5y"),),
        ("bounces+d30.6b5a4c3d2e@harbor.example.org",),
        status="5.0.0",
        diagnostic="550 Requested action not taken: no such user here",
        subject="Returned mail: see transcript for details",
    ),
    "postfix_soft_mailbox_full_5.2.2.eml": Expect(
        SOFT,
        ("full.box@example.com",),
        (mid("lesson-4", READER),),  # from the message/rfc822 part
        ("bounces+d2x.aa11bb22cc@harbor.example.org",),
        status="5.2.2",
        diagnostic="Mailbox full",
        subject="Undelivered Mail Returned to Sender",
    ),
    "postfix_soft_expired_4.2.2.eml": Expect(
        SOFT,  # Action: failed with a 4.x.x status: the MTA gave up on a temporary error
        ("quota.reader@example.org",),
        (mid("lesson-6", "Yt5rE3wQ1aZ2xC4vB6nM8k"),),
        ("bounces+d2y.0f0e0d0c0b@harbor.example.org",),
        status="4.2.2",
        diagnostic="452 4.2.2 Mailbox over quota",
        subject="Undelivered Mail Returned to Sender",
    ),
    "postfix_policy_5.7.1.eml": Expect(
        SOFT,  # a content/policy refusal is not a dead mailbox
        ("strict.filter@example.com",),
        (mid("lesson-3", "Bn6mV8cX0zL2kJ4hG6fD8s"),),
        ("bounces+d31.1a2b3c4d5e@harbor.example.org",),
        status="5.7.1",
        diagnostic="rejected as spam",
        subject="Undelivered Mail Returned to Sender",
    ),
    "postfix_delayed_4.4.1.eml": Expect(
        UNKNOWN,  # a delay notice: still queued, nothing failed
        ("slow.server@example.net",),
        (mid("lesson-3", "Hq1wE2rT3yU4iO5pA6sD7f"),),
        ("bounces+d2z.9a8b7c6d5e@harbor.example.org",),
        status="4.4.1",
        diagnostic="Connection timed out",
        subject="Delayed Mail (still being retried)",
    ),
    # -- Bounces in plain words ------------------------------------------------------------
    "yahoo_hard_plain.eml": Expect(
        HARD,
        ("gone.reader@example.com",),
        (mid("lesson-2", "Mn4bV6cX8zL1kJ3hG5fD7s"),),  # from the inline copy
        ("bounces+d2u.77aa01bc3f@harbor.example.org",),
        status=None,  # no enhanced code anywhere
        diagnostic="554: delivery error: dd This user doesn't have a yahoo.com account",
        subject="Failure Notice",
    ),
    "qmail_hard_plain.eml": Expect(
        HARD,
        ("left.long.ago@example.net",),
        (mid("confirm-1", "Zk9yX8wV7uT6sR5qP4oN3m"),),  # a folded Message-ID line
        ("bounces+d2v.5e6f7a8b9c@harbor.example.org",),
        status="5.1.1",
        diagnostic="Sorry, no mailbox here by that name. (#5.1.1)",
        subject="failure notice",
    ),
    "exim_hard_plain.eml": Expect(
        HARD,
        ("old.address@example.net",),
        (mid("lesson-7-r1", "Pq2wE4rT6yU8iO0pA1sD3f"),),
        ("bounces+d2w.1f2e3d4c5b@harbor.example.org",),  # Envelope-To, To
        status="5.1.1",
        diagnostic="User unknown in local recipient table",
        subject="Mail delivery failed: returning message to sender",
    ),
    # -- Complaints ------------------------------------------------------------------------
    "arf_yahoo.eml": Expect(
        COMPLAINT,
        (),  # Yahoo redacts the recipient: the Message-ID names the reader
        (mid("lesson-3", READER),),
        ("fbl@harbor.example.org",),
        feedback_type="abuse",
        diagnostic="This is an email abuse report",
        subject="FW: Lesson 3: Noticing the breath",
    ),
    "arf_aol.eml": Expect(
        COMPLAINT,
        ("complainer@example.com",),  # no Original-Rcpt-To: the returned message's To
        (mid("lesson-2", "Wd4fG6hJ8kL0zX2cV4bN6m"),),
        ("fbl@harbor.example.org",),
        feedback_type="abuse",
        diagnostic="email abuse report",
        subject="Email Feedback Report for IP 192.0.2.5",
    ),
    "arf_generic_rfc5965.eml": Expect(
        COMPLAINT,
        ("subscriber.one@example.net",),
        (mid("lesson-9", "Gh7jK9lZ1xC3vB5nM7qW9e"),),  # text/rfc822-headers
        ("abuse-reports@harbor.example.org",),
        feedback_type="abuse",
        diagnostic="received from IP 192.0.2.5",
        subject="FW: Lesson 9: Gratitude at the end of the day",
    ),
    "arf_not_spam.eml": Expect(
        COMPLAINT,
        ("happy.reader@example.com", "second.reader@example.com"),
        (mid("lesson-1", "Ty6uI8oP0aS2dF4gH6jK8l"),),
        ("fbl@harbor.example.org",),
        feedback_type="not-spam",
        diagnostic="out of the spam folder",
        subject="Feedback report",
    ),
    "arf_microsoft_jmrp.eml": Expect(
        COMPLAINT,
        ("outlook.reader@example.org",),  # X-HmXmrOriginalRecipient
        (mid("lesson-3", "Vb2nM4qW6eR8tY0uI2oP4a"),),
        ("jmrp@harbor.example.org",),
        feedback_type="abuse",  # JMRP has no Feedback-Type
        diagnostic="abuse report",
        subject="complaint about message from 192.0.2.5",
    ),
    # -- Automatic replies -----------------------------------------------------------------
    "auto_rfc3834_sieve_vacation.eml": Expect(
        AUTO,
        ("hanna@example.org",),
        (mid("lesson-4", "Hn1mB3vC5xZ7lK9jH1gF3d"),),
        subject="Automatisch: Re: Lesson 4: A body scan",
    ),
    "auto_x_autoreply.eml": Expect(
        AUTO,
        ("paul@example.net",),
        (mid("lesson-5", "Pa1sD3fG5hJ7kL9zX1cV3b"),),
        subject="Thank you for your email",
    ),
    "auto_precedence_auto_reply.eml": Expect(
        AUTO,
        ("support@example.com",),
        (mid("lesson-6", "Sd2fG4hJ6kL8zX0cV2bN4m"),),
        subject="[Ticket #48213] We have received your request",
    ),
    "auto_exchange_automatic_reply.eml": Expect(
        AUTO,
        ("ingrid@example.org",),
        (mid("lesson-3", "Ig8uY6tR4eW2qA0sD8fG6h"),),
        subject="Automatic reply: Lesson 3: Noticing the breath",
    ),
    "auto_gmail_vacation.eml": Expect(
        AUTO,
        ("mara.reader@example.com",),
        (mid("confirm-1", READER),),
        subject="Re: Please confirm your place in the course",
    ),
    # -- Replies ---------------------------------------------------------------------------
    "reply_plain_gmail.eml": Expect(
        REPLY,
        ("sam.reader@example.com",),
        (mid("lesson-3", READER),),
        text="Thank you, the breathing exercise helped a lot this week.\n"
        "I have a question about lesson 4 though: can I do it lying down?\n"
        "\n"
        "Sam",
        subject="Re: Lesson 3: Noticing the breath",
    ),
    "reply_html_only.eml": Expect(
        REPLY,
        ("renee@example.org",),
        (mid("lesson-5", "Rn3eE5rR7eA9dR1eR3nE5e"),),
        text="Thanks & see you tomorrow!\n"
        "The clouds image really works for me \u2013 I used it on the train.\n"
        "\n"
        "Ren\u00e9e",
        subject="Re: Lesson 5: Letting thoughts pass \u2013 thank you",
    ),
    "reply_german.eml": Expect(
        REPLY,
        ("jonas@example.net",),
        (mid("lesson-3", "Jn5sL7eS9eR1xA3mP5lE7n"),),
        text="Vielen Dank f\u00fcr die \u00dcbung!\n"
        "Das Z\u00e4hlen der Atemz\u00fcge hat mir beim Einschlafen geholfen.\n"
        "\n"
        "Viele Gr\u00fc\u00dfe\n"
        "Jonas",
        subject="Re: Lektion 3: Den Atem bemerken",
    ),
    "reply_outlook.eml": Expect(
        REPLY,
        ("alex.reader@example.org",),
        (mid("lesson-6", "Ax1eL3eX5rE7aD9eR1aL3x"),),
        text="Hi,\n"
        "\n"
        "This one is hard for me \u2013 I usually look at my phone until midnight.\n"
        "I'll try the wind-down list tonight.\n"
        "\n"
        "Best,\n"
        "Alex",
        subject="RE: Lesson 6: Sleep and the evening wind-down",
    ),
    "reply_outlook_original_message.eml": Expect(
        REPLY,
        ("chris@example.com",),
        (),  # no In-Reply-To: the caller matches the From address
        text="I clicked the link but it says the page has expired. Can you send a new one?\n"
        "\n"
        "Thanks\n"
        "Chris",
        subject="RE: Please confirm your place in the course",
    ),
    "reply_interleaved.eml": Expect(
        REPLY,
        ("robin@example.net",),
        # In-Reply-To first, then References newest first.
        (mid("lesson-7", "Rb4nR6oB8iN0rE2aD4eR6r"), mid("lesson-2", "Rb4nR6oB8iN0rE2aD4eR6r")),
        text='"You are doing enough."\n\nNot yet, but I am trying.',
        subject="Re: Lesson 7: Kindness toward yourself",
    ),
    # -- Junk ------------------------------------------------------------------------------
    "junk_empty.eml": Expect(UNKNOWN, addressed_to=()),
    "junk_binary.eml": Expect(UNKNOWN, addressed_to=()),
    "junk_broken_mime.eml": Expect(
        REPLY,  # multipart/mixed without a boundary: split at the one the body uses
        ("lee@example.com",),
        (mid("lesson-2", "Le3eR5eA7dE9rL1eE3rE5a"),),
        text="I heard three birds this morning.",
        subject="Re: Lesson 2: Arriving where you are",
    ),
    "junk_non_utf8.eml": Expect(
        REPLY,  # Latin-1 bytes in the headers and in a body that claims UTF-8
        ("joerg@example.net",),
        (mid("lesson-4", "Jg5rG7lE9sE1rJ3oE5rG7l"),),
        text="Danke f\u00fcr die \u00dcbung, sch\u00f6n.\nGr\u00fc\u00dfe",
        subject="Re: Lektion 4 \u00fcbung",
    ),
    "junk_huge_header.eml": Expect(
        REPLY,
        ("huge@example.com",),
        # References newest first: ours is the last one written, so it comes first.
        (mid("lesson-9", "Hg3hE5aD7eR9hU1gE3hE5a"), "<thread-299@elsewhere.example.net>"),
        text="Short answer: yes.",
        subject=("Re: " + "very " * 400 + "long subject")[:998],
        more_ids=True,
    ),
}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_every_sample_has_an_expectation() -> None:
    assert sorted(path.name for path in SAMPLES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(name: str) -> None:
    expect = EXPECTED[name]
    got = parse_feedback(sample(name))
    assert got.kind == expect.kind
    assert got.recipients == expect.recipients
    if expect.more_ids:
        assert got.message_ids[: len(expect.message_ids)] == expect.message_ids
    else:
        assert got.message_ids == expect.message_ids
    assert got.addressed_to == expect.addressed_to
    assert got.status == expect.status
    assert got.feedback_type == expect.feedback_type
    if expect.diagnostic is None:
        assert got.diagnostic is None
    else:
        assert got.diagnostic is not None and expect.diagnostic in got.diagnostic
    assert got.text == expect.text
    assert got.subject == expect.subject


@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if e.kind == REPLY))
def test_reply_text_has_no_quote(name: str) -> None:
    text = parse_feedback(sample(name)).text
    assert text is not None
    for quoted in (">", "wrote:", "schrieb", "Original Message", "Harbor Course", "Today:"):
        assert quoted not in text


# -- The rules for a DSN, one recipient at a time -------------------------------------------


def dsn(*recipients: dict[str, str], report_type: str = "delivery-status") -> bytes:
    """A minimal RFC 3464 report with one block per recipient."""
    blocks = "".join(
        "\n" + "".join(f"{name}: {value}\n" for name, value in fields.items())
        for fields in recipients
    )
    return (
        "From: MAILER-DAEMON@mx.example.net\n"
        "To: bounces+d1.0123456789@harbor.example.org\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="b"\n'
        "\n"
        "--b\n"
        "Content-Type: text/plain\n"
        "\n"
        "Your message could not be delivered.\n"
        "--b\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.example.net\n" + blocks + "\n--b--\n"
    ).encode()


def rcpt(address: str = "reader@example.com", **fields: str) -> dict[str, str]:
    out = {"Final-Recipient": f"rfc822; {address}"}
    out.update({name.replace("_", "-").title(): value for name, value in fields.items()})
    return out


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "kind", "effective"),
    [
        # The address does not exist or is disabled.
        ("failed", "5.1.1", "smtp; 550 5.1.1 user unknown", HARD, "5.1.1"),
        ("failed", "5.1.2", "smtp; 550 5.1.2 bad destination system", HARD, "5.1.2"),
        ("failed", "5.1.3", "smtp; 501 5.1.3 bad address syntax", HARD, "5.1.3"),
        ("failed", "5.1.6", "smtp; 550 5.1.6 mailbox has moved", HARD, "5.1.6"),
        ("failed", "5.1.10", "smtp; 550 5.1.10 RecipientNotFound", HARD, "5.1.10"),
        ("failed", "5.2.1", "smtp; 550 5.2.1 account disabled", HARD, "5.2.1"),
        # Permanent, but not a dead mailbox.
        ("failed", "5.2.2", "smtp; 552 5.2.2 mailbox full", SOFT, "5.2.2"),
        ("failed", "5.3.4", "smtp; 552 5.3.4 message too big", SOFT, "5.3.4"),
        ("failed", "5.7.1", "smtp; 550 5.7.1 user unknown", SOFT, "5.7.1"),  # status wins
        ("failed", "5.4.4", "X-Postfix; Host or domain name not found", SOFT, "5.4.4"),
        ("failed", "5.7.26", "smtp; 550 5.7.26 unauthenticated mail", SOFT, "5.7.26"),
        # Temporary.
        ("failed", "4.4.7", "X-Postfix; delivery time expired", SOFT, "4.4.7"),
        ("failed", "4.7.1", "smtp; 450 4.7.1 greylisted, try again", SOFT, "4.7.1"),
        # Generic or no enhanced code: the words decide.
        ("failed", "5.0.0", "smtp; 550 5.1.1 <r@example.com>: user unknown", HARD, "5.1.1"),
        ("failed", "5.0.0", "smtp; 550 No such user here", HARD, "5.0.0"),
        ("failed", "5.0.0", "smtp; 553 sorry, that domain isn't in my list", SOFT, "5.0.0"),
        (
            "failed",
            "5.1.0",
            "smtp; 550 5.1.0 Address rejected: mailbox does not exist",
            HARD,
            "5.1.0",
        ),
        ("failed", "5.5.0", "smtp; 550 5.5.0 Requested action not taken", SOFT, "5.5.0"),
        ("failed", "", "smtp; 551 User not local; the user does not exist", HARD, None),
        ("failed", "", "smtp; 554 Transaction failed", SOFT, None),
        ("", "5.1.1", "", HARD, "5.1.1"),  # no Action: a 5.x.x status is a failure
        # Not failures.
        ("delayed", "4.4.1", "X-Postfix; connect timed out", UNKNOWN, "4.4.1"),
        ("delivered", "2.0.0", "smtp; 250 2.0.0 OK", UNKNOWN, "2.0.0"),
        ("relayed", "2.0.0", "", UNKNOWN, "2.0.0"),
    ],
)
def test_dsn_rules(
    action: str, status: str, diagnostic: str, kind: FeedbackKind, effective: str | None
) -> None:
    fields = {"Action": action, "Status": status, "Diagnostic-Code": diagnostic}
    got = parse_feedback(dsn(rcpt(**{k: v for k, v in fields.items() if v})))
    assert got.kind == kind
    assert got.status == effective
    assert got.recipients == ("reader@example.com",)
    assert got.addressed_to == ("bounces+d1.0123456789@harbor.example.org",)


def test_dsn_worst_recipient_decides_and_names_only_its_recipients() -> None:
    got = parse_feedback(
        dsn(
            rcpt("full@example.com", Action="failed", Status="5.2.2"),
            rcpt("gone@example.com", Action="failed", Status="5.1.1"),
            rcpt("slow@example.com", Action="delayed", Status="4.4.1"),
        )
    )
    assert got.kind == HARD
    assert got.recipients == ("gone@example.com",)
    assert got.status == "5.1.1"
    got = parse_feedback(
        dsn(
            rcpt("slow@example.com", Action="delayed", Status="4.4.1"),
            rcpt("full@example.com", Action="failed", Status="5.2.2"),
        )
    )
    assert (got.kind, got.recipients, got.status) == (SOFT, ("full@example.com",), "5.2.2")


def test_dsn_original_recipient_wins_over_final_recipient() -> None:
    block = rcpt("forwarded.to@example.net", Action="failed", Status="5.1.1")
    block["Original-Recipient"] = "rfc822;Reader@Example.com"
    assert parse_feedback(dsn(block)).recipients == ("reader@example.com",)


@pytest.mark.parametrize(
    ("status", "diagnostic", "hard"),
    [
        ("5.1.1", "", True),
        ("5.1.10", "", True),
        ("5.2.1", "", True),
        ("5.2.2", "", False),
        ("5.3.4", "", False),
        ("5.7.1", "", False),
        ("4.2.2", "", False),
        ("5.0.0", "", False),
        ("5.0.0", "550 No such user here", True),
        ("5.1.1 (bad destination mailbox address)", "", True),
        ("", "", False),
    ],
)
def test_is_hard_status(status: str, diagnostic: str, hard: bool) -> None:
    assert is_hard_status(status, diagnostic) is hard


# -- Automatic or not, person or not --------------------------------------------------------


def message(headers: str, body: str = "Thanks, this helped.\n") -> bytes:
    return (
        "From: Reader <reader@example.com>\n"
        "To: course@harbor.example.org\n"
        f"In-Reply-To: {mid('lesson-3', READER)}\n"
        + headers
        + "Content-Type: text/plain; charset=utf-8\n\n"
        + body
    ).encode()


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ("Subject: Re: Lesson 3\n", REPLY),
        ("Subject: Re: Lesson 3\nAuto-Submitted: no\n", REPLY),
        ("Subject: Re: Lesson 3\nAuto-Submitted: auto-generated\n", AUTO),
        ("Subject: Re: Lesson 3\nAuto-Submitted: auto-replied; owner-email=r@example.com\n", AUTO),
        ("Subject: Re: Lesson 3\nX-Autorespond: on vacation\n", AUTO),
        ("Subject: Re: Lesson 3\nX-Autogenerated: Reply\n", AUTO),
        ("Subject: Re: Lesson 3\nPrecedence: bulk\n", AUTO),
        ("Subject: Re: Lesson 3\nPrecedence: junk\n", AUTO),
        # Outlook puts X-Auto-Response-Suppress on ordinary mail too.
        ("Subject: Re: Lesson 3\nX-Auto-Response-Suppress: All\n", REPLY),
        (
            "Subject: Re: Lesson 3\nX-Auto-Response-Suppress: All\n"
            "X-MS-Exchange-Inbox-Rules-Loop: reader@example.com\n",
            AUTO,
        ),
        ("Subject: Out of Office: Lesson 3\n", AUTO),
        ("Subject: Abwesenheitsnotiz: Lektion 3\n", AUTO),
        ("Subject: =?utf-8?q?R=C3=A9ponse_automatique=3A_Le=C3=A7on_3?=\n", AUTO),
        # Mail from no person.
        ("Subject: Weekly digest\nList-Id: <digest.example.com>\n", UNKNOWN),
        ("Subject: Offers\nList-Unsubscribe: <https://example.com/u>\n", UNKNOWN),
        ("Subject: News\nPrecedence: list\n", UNKNOWN),
    ],
)
def test_automatic_or_person(headers: str, kind: FeedbackKind) -> None:
    got = parse_feedback(message(headers))
    assert got.kind == kind
    assert got.message_ids == (mid("lesson-3", READER),)
    if kind in (REPLY, AUTO):
        assert got.recipients == ("reader@example.com",)
    assert (got.text is not None) == (kind == REPLY)


@pytest.mark.parametrize(
    "sender", ["noreply@example.com", "no-reply@example.com", "postmaster@example.com"]
)
def test_daemons_and_no_reply_senders_are_not_people(sender: str) -> None:
    raw = message("Subject: Your report\n").replace(b"reader@example.com", sender.encode())
    assert parse_feedback(raw).kind == UNKNOWN


def test_read_receipt_is_automatic() -> None:
    raw = (
        "From: Reader <reader@example.com>\n"
        "To: course@harbor.example.org\n"
        "Subject: Read: Lesson 3\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\n'
        "\n--b\nContent-Type: text/plain\n\nYour message was read.\n"
        "--b\nContent-Type: message/disposition-notification\n\n"
        "Final-Recipient: rfc822; reader@example.com\n"
        f"Original-Message-ID: {mid('lesson-3', READER)}\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\n--b--\n"
    ).encode()
    assert parse_feedback(raw).kind == AUTO


# -- Quote removal ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "text"),
    [
        # French and Spanish Gmail attributions.
        (
            "Merci !\n\nLe mar. 4 mars 2025 à 10:12, Harbor Course <course@harbor.example.org>"
            " a écrit :\n> Aujourd'hui : le souffle.\n",
            "Merci !",
        ),
        (
            "¡Gracias!\n\nEl mar, 4 mar 2025 a las 10:12, Harbor Course\n"
            "(<course@harbor.example.org>) escribió:\n\n> Hoy: la respiración.\n",
            "¡Gracias!",
        ),
        # German Outlook header block, with bold markers as Outlook renders them.
        (
            "Danke, gute Übung.\n\n*Von:* Harbor Course <course@harbor.example.org>\n"
            "*Gesendet:* Dienstag, 4. März 2025 10:12\n*An:* leser@example.net\n\nHeute: ...\n",
            "Danke, gute Übung.",
        ),
        # Bottom posting: the answer is after the quote.
        (
            "On Tue, Mar 4, 2025 at 10:12 AM Harbor Course <course@harbor.example.org> wrote:\n"
            "> Today: noticing the breath.\n\nI tried it twice today.\n",
            "I tried it twice today.",
        ),
        # Nothing new: only the quote.
        ("Harbor Course <course@harbor.example.org> wrote:\n> Today: the breath.\n", ""),
        # A sentence that ends in "wrote:" but is followed by the reader's own words stays.
        (
            "My therapist once wrote:\nBe kind to yourself.\n",
            "My therapist once wrote:\nBe kind to yourself.",
        ),
        # A forwarded message is not the reader's text.
        (
            "Look what I found.\n\n---------- Forwarded message ---------\nFrom: x\n",
            "Look what I found.",
        ),
    ],
)
def test_quote_removal(body: str, text: str) -> None:
    got = parse_feedback(message("Subject: Re: Lesson 3\n", body))
    assert got.kind == REPLY
    assert got.text == text


def test_reply_text_is_capped() -> None:
    got = parse_feedback(message("Subject: Re: long\n", "word " * 10_000))
    assert got.text is not None and len(got.text) == MAX_TEXT


def test_only_the_inline_text_is_the_reply() -> None:
    raw = (
        b"From: Reader <reader@example.com>\nTo: course@harbor.example.org\n"
        b'Subject: Re: Lesson 3\nContent-Type: multipart/mixed; boundary="m"\n\n'
        b"--m\nContent-Type: text/plain\n\nMy drawing of the breath, attached.\n"
        b'--m\nContent-Type: text/plain; name="notes.txt"\n'
        b'Content-Disposition: attachment; filename="notes.txt"\n\nprivate notes\n'
        b"--m\nContent-Type: message/rfc822\n\nFrom: someone@example.net\nSubject: fwd\n\n"
        b"a forwarded message\n--m--\n"
    )
    assert parse_feedback(raw).text == "My drawing of the breath, attached."


# -- Never raise, never hang -----------------------------------------------------------------


def check_invariants(got: Feedback) -> None:
    assert isinstance(got, Feedback)
    assert got.kind in FeedbackKind
    for address in got.recipients + got.addressed_to:
        assert address == address.lower() and "@" in address
    for message_id in got.message_ids:
        assert message_id.startswith("<") and message_id.endswith(">")
    assert got.text is None or (got.kind == REPLY and len(got.text) <= MAX_TEXT)
    assert got.diagnostic is None or len(got.diagnostic) <= MAX_DIAGNOSTIC
    assert got.subject is None or len(got.subject) <= 998


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(raw: bytes) -> None:
    check_invariants(parse_feedback(raw))


ALL_SAMPLES = [sample(name) for name in sorted(EXPECTED)]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ALL_SAMPLES),
    st.lists(
        st.tuples(st.integers(0, 1 << 16), st.integers(0, 64), st.binary(max_size=64)),
        max_size=8,
    ),
)
def test_damaged_samples_never_raise(raw: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(raw)
    for at, cut, insert in edits:
        at %= len(data) + 1
        data[at : at + cut] = insert
    check_invariants(parse_feedback(bytes(data)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "From: a@example.com\n",
                "Content-Type: multipart/mixed; boundary=b\n",
                "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n",
                "Content-Type: message/delivery-status\n",
                "Content-Type: message/rfc822\n",
                "Content-Type: message/feedback-report\n",
                "Content-Type: text/html\n",
                "Content-Transfer-Encoding: base64\n",
                "Content-Transfer-Encoding: quoted-printable\n",
                "Subject: =?utf-8?b?w7w=?= =?bogus?q?x?=\n",
                "\n",
                "--b\n",
                "--b--\n",
                "Final-Recipient: rfc822; a@b\n",
                "Action: failed\n",
                "Status: 5.1.1\n",
                "Feedback-Type: abuse\n",
                "<blockquote>",
                "</blockquote>",
                "<style>",
                "> q\n",
                "On Tue wrote:\n",
                "<x@y>:\n",
                "The following address(es) failed:\n",
                "=C3\n",
                "Message-ID: <m@example.org>\n",
                "X-Failed-Recipients: a@b\n",
                "\x00",
                "\udcff",
            ]
        ),
        max_size=60,
    )
)
def test_shuffled_mime_pieces_never_raise(pieces: list[str]) -> None:
    check_invariants(parse_feedback("".join(pieces).encode("utf-8", "surrogateescape")))


def test_not_bytes_is_unknown_not_an_error() -> None:
    odd: Any = None
    assert parse_feedback(odd).kind == UNKNOWN
    assert parse_feedback(b"\r\n\r\n").kind == UNKNOWN


REPLY_HEAD = b"From: a@example.com\nTo: course@harbor.example.org\nSubject: Re: x\n"
MB = 1 << 20


@pytest.mark.parametrize(
    "raw",
    [
        REPLY_HEAD + b"Content-Type: text/html\n\n" + b"<" * MB,
        REPLY_HEAD + b"Content-Type: text/html\n\n" + b"<style>" * (MB // 7),
        REPLY_HEAD + b"Content-Type: text/html\n\n" + b"<blockquote>x" * (MB // 13),
        b'From: a@example.com\nContent-Type: multipart/mixed; a="' + b";" * MB + b"\n\nx",
        b"From: a@example.com\nSubject: " + b"=?utf-8?q?a" * (MB // 11) + b"\n\nx",
        b"From: a@example.com\nReferences: " + b"<a@b> " * (MB // 6) + b"\n\nx",
        b"From: " + b"(" * 4000 + b"a@example.com\n\nx",
        REPLY_HEAD + b"\n" + (b"Bob wrote:\n" + b"\n" * 1000) * (MB // 1012),
        REPLY_HEAD + b"\n" + b"> x\nOn x wrote:\n" * (MB // 16),
        b"From: MAILER-DAEMON@x\nSubject: failure notice\n\n"
        + b"<a@b.example>: 550\n" * (MB // 20),
        b"From: MAILER-DAEMON@x\n\n" + b"-" * MB,
        b"From: a@example.com\n"
        + b"".join(
            b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(5000)
        ),
        b"From: a@example.com\nContent-Type: multipart/mixed\n\n" + b"--x\n" * (MB // 4),
    ],
    ids=[
        "html-lt",
        "html-style",
        "html-quotes",
        "param-semicolons",
        "encoded-words",
        "references",
        "nested-comments",
        "attributions",
        "quotes",
        "qmail-lines",
        "dashes",
        "deep-nesting",
        "boundary-lines",
    ],
)
def test_pathological_input_is_fast(raw: bytes) -> None:
    start = time.perf_counter()
    check_invariants(parse_feedback(raw))
    assert time.perf_counter() - start < 5  # about 0.3 s each: linear, with a wide margin


def test_only_the_first_megabytes_are_read() -> None:
    # A reply with a large attachment after its text is still read as a reply.
    attachment = b"A" * (6 * MB)
    raw = (
        REPLY_HEAD + b'Content-Type: multipart/mixed; boundary="m"\n\n'
        b"--m\nContent-Type: text/plain\n\nPhoto of my practice corner.\n"
        b"--m\nContent-Type: image/jpeg\nContent-Transfer-Encoding: base64\n"
        b"Content-Disposition: attachment; filename=corner.jpg\n\n" + attachment + b"\n--m--\n"
    )
    got = parse_feedback(raw)
    assert (got.kind, got.text) == (REPLY, "Photo of my practice corner.")


@pytest.mark.parametrize(
    ("subject", "body", "kind"),
    [
        # A person may write a bounce-like subject: without a bounce's structure, a reply.
        (
            "Re: Undelivered mail?",
            "I got error 550 when I sent your message to my friend at friend@example.net.\n",
            REPLY,
        ),
        # The same subject over a qmail-style list of failed recipients is a bounce.
        ("Undelivered Mail", "<gone@example.com>:\n550 5.1.1 no such user\n", HARD),
    ],
)
def test_a_bounce_subject_alone_is_not_enough(subject: str, body: str, kind: FeedbackKind) -> None:
    assert parse_feedback(message(f"Subject: {subject}\n", body)).kind == kind
