"""Password and client-secret hashing (scrypt, per-secret salt, constant-time compare)."""

import hmac

import pytest

from services.auth import passwords


def test_a_hash_verifies_its_password_and_nothing_else():
    stored = passwords.hash_secret("correct horse")
    assert passwords.verify(stored, "correct horse")
    assert not passwords.verify(stored, "correct horse ")
    assert not passwords.verify(stored, "")


def test_every_hash_has_its_own_salt():
    first, second = passwords.hash_secret("same"), passwords.hash_secret("same")
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]


def test_the_hash_records_its_scheme_and_cost():
    # A secret longer than chance can spell in base64 (a two-letter one turned up in a random
    # salt now and then).
    secret = "correct-horse-battery-staple"
    scheme, n, r, p, salt, digest = passwords.hash_secret(secret).split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", passwords.N, passwords.R, passwords.P)
    assert secret not in salt + digest


def test_a_hash_made_with_other_costs_still_verifies():
    stored = passwords.hash_secret("pw", n=2**10, r=4, p=2)
    assert passwords.verify(stored, "pw")


def test_an_unknown_name_does_the_work_and_fails():
    assert passwords.verify(None, "anything") is False


@pytest.mark.parametrize(
    "stored",
    ["", "plain", "bcrypt$1$2$3$AAAA$AAAA", "scrypt$x$8$1$AAAA$AAAA", "scrypt$16384$8$1$!$!"],
)
def test_a_malformed_stored_hash_never_verifies(stored):
    assert passwords.verify(stored, "pw") is False


def test_the_comparison_is_constant_time(monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(passwords.hmac, "compare_digest", spy)
    stored = passwords.hash_secret("pw")
    assert passwords.verify(stored, "pw")
    assert len(compared) == 1


def test_an_absurdly_long_secret_is_refused_without_hashing():
    with pytest.raises(ValueError):
        passwords.hash_secret("x" * (passwords.MAX_SECRET_BYTES + 1))
    assert passwords.verify(passwords.hash_secret("pw"), "x" * 10_000) is False
