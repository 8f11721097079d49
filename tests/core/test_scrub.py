"""Secret scrubbing: token patterns, private key blocks and secret env values never reach a log."""

from __future__ import annotations

import pytest

from aq.core.scrub import REDACTED, Scrubber, secret_values

TOKENS = {
    "github classic": "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2,
    "github oauth": "gho_" + "Z9y8X7w6V5u4T3s2R1q0" * 2,
    "github fine-grained": "github_pat_11ABCDEFG0" + "abcdefghij_KLMNOPQRS" * 3,
    "openai": "sk-" + "proj4Xz9QwErTy" * 3,
    "openai project": "sk-proj-" + "Ab12Cd34Ef56Gh78" * 2,
    "anthropic": "sk-ant-api03-" + "Xy9_Zw8-Vu7Ts6Rq5Po4" * 4,
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "aws session": "ASIAY34FZKBOKMUTVV7A",
    "slack bot": "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp",
    "slack user": "xoxp-1234567890-abcdefgh",
    "gitlab": "glpat-Ab12Cd34Ef56Gh78Ij90",
    "google": "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "bearer": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
}


@pytest.mark.parametrize("token", TOKENS.values(), ids=TOKENS.keys())
def test_token_patterns_are_redacted(token: str) -> None:
    """Each known token pattern is replaced, and the text around it kept."""
    line = f"export CREDENTIAL={token} # from the vault\n"
    assert Scrubber({}).line(line) == f"export CREDENTIAL={REDACTED} # from the vault\n"


def test_several_tokens_on_one_line() -> None:
    """Every token on a line is replaced, not only the first."""
    line = f"{TOKENS['aws']} and {TOKENS['gitlab']}\n"
    assert Scrubber({}).line(line) == f"{REDACTED} and {REDACTED}\n"


PRIVATE_KEY = (
    "deploying with key:\n"
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBUoJ7dL2H8mZ8eV0f8bW7n7j4xH8y0kJmU6d0RgK0N1gAAAJg1lC0JNZQt\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
    "key loaded\n"
)


def test_private_key_block_across_lines_is_redacted() -> None:
    """A private key block spread over lines is replaced whole; the lines around it are kept."""
    out = Scrubber({}).text(PRIVATE_KEY)
    assert "b3BlbnNzaC1rZXkt" not in out
    assert "QyNTUxOQAAACBUoJ7" not in out
    assert "BEGIN" not in out and "END" not in out
    assert [line for line in out.splitlines() if line] == ["deploying with key:", REDACTED, "key loaded"]


def test_private_key_block_fed_line_by_line_is_redacted() -> None:
    """A scrubber fed one line at a time (as a log streams) remembers it is inside a key block."""
    scrubber = Scrubber({})
    out = "".join(scrubber.line(line) for line in PRIVATE_KEY.splitlines(keepends=True))
    assert out == Scrubber({}).text(PRIVATE_KEY)
    assert scrubber.line("after the key\n") == "after the key\n"


@pytest.mark.parametrize("kind", ["", "RSA ", "EC ", "ENCRYPTED ", "DSA "])
def test_private_key_on_one_line_is_redacted(kind: str) -> None:
    """A key block inside one line (as in JSON) is replaced, and the text after it kept."""
    line = f'{{"key": "-----BEGIN {kind}PRIVATE KEY-----\\nMIIEvQIBADANBg\\n-----END {kind}PRIVATE KEY-----\\n", "n": 1}}\n'
    assert Scrubber({}).line(line) == f'{{"key": "{REDACTED}\\n", "n": 1}}\n'


def test_pgp_private_key_block_is_redacted() -> None:
    """An armored PGP private key block is replaced whole."""
    text = ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0vVx0BCADZ3w1x7pYq\n=Ab1C\n"
            "-----END PGP PRIVATE KEY BLOCK-----\n")
    assert "lQOYBF0vVx0BCADZ3w1x7pYq" not in Scrubber({}).text(text)


def test_public_key_and_certificate_are_kept() -> None:
    """Public keys and certificates are not secrets and are left alone."""
    text = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
    assert Scrubber({}).text(text) == text


@pytest.mark.parametrize("name", ["GITHUB_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD",
                                  "my_secret", "SMTP_PASSWD"])
def test_values_of_secret_env_vars_are_redacted(name: str) -> None:
    """The value of an env var whose name holds TOKEN, KEY, SECRET or PASSWORD is replaced wherever it shows."""
    scrubber = Scrubber({name: "hunter2-correct-horse", "HOME": "/home/ann"})
    out = scrubber.text("login with hunter2-correct-horse\nurl=https://u:hunter2-correct-horse@db/x\n")
    assert out == f"login with {REDACTED}\nurl=https://u:{REDACTED}@db/x\n"


def test_values_of_other_env_vars_are_kept() -> None:
    """Values of env vars whose names do not say secret are left alone."""
    scrubber = Scrubber({"HOME": "/home/ann", "EDITOR": "vim-huge", "LANG": "en_US.UTF-8"})
    text = "cd /home/ann && vim-huge notes (en_US.UTF-8)\n"
    assert scrubber.text(text) == text


def test_short_env_values_are_not_redacted() -> None:
    """A secret env var's value shorter than six characters is not redacted, as it would hit ordinary words."""
    scrubber = Scrubber({"DEBUG_TOKEN": "1", "USE_KEYRING": "yes", "API_KEY": "abcde"})
    text = "1 test passed: yes, abcde\n"
    assert scrubber.text(text) == text
    assert secret_values({"DEBUG_TOKEN": "1", "USE_KEYRING": "yes", "API_KEY": "abcde", "A_KEY": "abcdef"}) == [
        "abcdef"]


def test_longer_secret_values_are_matched_first() -> None:
    """When one secret value contains another, the longer is redacted whole."""
    scrubber = Scrubber({"A_TOKEN": "abcdef", "B_TOKEN": "abcdef-and-more"})
    assert scrubber.line("x abcdef-and-more y\n") == f"x {REDACTED} y\n"


def test_secret_values_with_regex_characters_are_literal() -> None:
    """A secret value holding regex metacharacters is matched literally."""
    scrubber = Scrubber({"DB_PASSWORD": "p@ss.w*rd(1)"})
    assert scrubber.line("pw p@ss.w*rd(1) pwXssXwwrd1\n") == f"pw {REDACTED} pwXssXwwrd1\n"


ORDINARY = (
    "collected 42 items\n"
    "tests/test_auth.py::test_login PASSED [ 50%]\n"
    "ask the user; skip-ci; risk assessment done\n"
    "AKIA is a prefix; ghp_short; xoxb-; sk-12; key=value; token: none\n"
    "commit 3f2a9b1c0d4e5f60718293a4b5c6d7e8f9012345 (HEAD -> main)\n"
    "    def monkey_patch(self, key, secret_sauce):\n"
)


def test_ordinary_text_is_untouched() -> None:
    """Ordinary log output, including words that start like tokens, passes through unchanged."""
    assert Scrubber({}).text(ORDINARY) == ORDINARY


@pytest.mark.parametrize("text", ["running task-queue-integration-tests\n", "df: disk-usage-monitoring-agent\n"])
def test_hyphenated_words_ending_in_sk_are_untouched(text: str) -> None:
    """A hyphenated word such as `task-queue-integration-tests` is not taken for an `sk-` key."""
    assert Scrubber({}).line(text) == text
