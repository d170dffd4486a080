"""DKIM: signing messages (dkimpy), making a key pair and the DNS record that goes with it.

Signing in the app is optional. Many relays sign for the practice (then leave
``COURSE_DKIM_KEY_FILE`` unset); when the relay does not, the app signs each message with the
practice's key, and the DNS record ``<selector>._domainkey.<domain>`` publishes the public
half (``course dkim keygen`` prints it, ``course doctor`` checks it).

The signed headers are the ones a reader sees and the ones a mailbox provider acts on: if
any of them were changed on the way (a new Subject, an added List-Unsubscribe), the
signature fails. ``From`` is signed twice, as RFC 6376 section 5.4.2 recommends, so that a
second From header cannot be added without breaking the signature.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: The headers each signature covers (absent ones are signed as absent, so adding one
#: later breaks the signature too).
SIGNED_HEADERS = (
    b"from",
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
)
KEY_BITS = 2048


class DkimError(ValueError):
    """The key file cannot be used for signing."""


def generate_key(bits: int = KEY_BITS) -> bytes:
    """A new RSA private key, as PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def public_key_b64(private_pem: bytes) -> str:
    """The public half of ``private_pem`` as the DNS record's ``p=`` value."""
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimError(f"not a PEM private key without a password: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimError("the key must be an RSA key")
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def dns_record(selector: str, domain: str, private_pem: bytes) -> tuple[str, str]:
    """The TXT record to publish: its name and its value."""
    return f"{selector}._domainkey.{domain}", f"v=DKIM1; k=rsa; p={public_key_b64(private_pem)}"


@dataclass(frozen=True)
class DkimSigner:
    """Signs finished messages with one key, selector and domain."""

    private_pem: bytes
    selector: str
    domain: str

    @classmethod
    def from_file(cls, path: Path, selector: str, domain: str) -> DkimSigner:
        """Load the key (checked now, not at the first message)."""
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise DkimError(f"cannot read {path}: {exc.strerror}") from None
        public_key_b64(pem)
        return cls(pem, selector, domain)

    def sign(self, message: bytes) -> bytes:
        """``message`` with a DKIM-Signature header in front."""
        signature = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
        return bytes(signature) + message
