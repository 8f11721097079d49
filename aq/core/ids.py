"""Job ids: a file's stem, never a path; new ones unique without coordination."""

from __future__ import annotations

import re
import unicodedata

from aq.errors import InvalidJobId

JOB_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
MAX_ID_LENGTH = 120
_SUFFIX_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no i, l, o, u


def is_job_id(text: str) -> bool:
    # not `x.md`: a command given `x.md` means job x (its file's name), so job x.md could never
    # be named, and a command meant for it would act on x
    return (len(text) <= MAX_ID_LENGTH and JOB_ID.fullmatch(text) is not None and ".." not in text
            and not text.endswith(".md"))


def check_job_id(text: str) -> str:
    """Return `text` if it is a valid job id, else raise with what is wrong and what is allowed."""
    if not is_job_id(text):
        if "/" in text or "\\" in text or ".." in text:
            problem = "is a path"
        elif not text:
            problem = "is empty"
        elif len(text) > MAX_ID_LENGTH:
            problem = f"is longer than {MAX_ID_LENGTH} characters"
        elif text.endswith(".md"):
            problem = f"ends in '.md', as job files do (it would name job {text[:-3]!r})"
        else:
            problem = "has characters other than lower-case letters, digits, '-', '_' and '.'"
        raise InvalidJobId(
            f"job id {text!r} {problem}: use lower-case letters, digits, '-', '_' and '.', "
            "starting with a letter or digit"
        )
    return text


def slugify(title: str, limit: int = 40) -> str:
    """`Fix the login page!` -> `fix-the-login-page`; empty for a title with no letters or digits."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > limit:
        slug = slug[:limit].rsplit("-", 1)[0] or slug[:limit]
    return slug


def new_job_id(title: str, entropy: int) -> str:
    """The slug of the title plus six base32 characters taken from `entropy` (30 random bits)."""
    suffix = ""
    for _ in range(6):
        entropy, digit = divmod(entropy, 32)
        suffix += _SUFFIX_ALPHABET[digit]
    slug = slugify(title) or "job"
    return f"{slug}-{suffix}"
