"""Team tokens: HS256 JWTs, minted for users and verified, with the rules on their claims.

Shared by the server (which verifies) and the CLI (``orc team token``/``invite``, which mint):
kept apart from :mod:`orc_team.server.auth` so a command that only mints or checks a user id
does not import the server's HTTP stack.  Reasons never echo a claim's value.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import dataclass
from typing import Any

import jwt

ALGORITHM = "HS256"
ROLES = ("member", "admin")
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
"""A token's ``sub``: it names locks' holders and goes into log lines, so nothing that could
forge a line or hide in one (no spaces, no control or invisible characters)."""
MAX_NAME = 100
MAX_EMAIL = 254
MAX_LIFETIME = 30 * 86400
"""Longest token lifetime the server accepts by default (``--max-token-lifetime``) and the
longest ``orc team token --expires``: a leaked token stops working within this."""

# The CLI warns once about a short secret; PyJWT would otherwise warn on every token checked.
warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)


class AuthError(Exception):
    """Why a token was refused, in words safe to log and to send back."""


@dataclass(frozen=True)
class Claims:
    user: str
    name: str
    email: str | None
    role: str
    expires: float

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def user_problem(user: object) -> str | None:
    """Why ``user`` cannot be a user id (a token's ``sub``), or None."""
    if not isinstance(user, str) or not USER_ID.fullmatch(user):
        return ("a user id is 1-64 letters, digits, '.', '_', '@', '+' or '-', starting with a "
                "letter or digit")
    return None


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a display name, or None: printable, at most 100 characters."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not name.isprintable():
        return (f"a display name is 1-{MAX_NAME} printable characters (no control, "
                "line-separator or invisible formatting characters)")
    return None


def email_problem(email: object) -> str | None:
    """Why ``email`` cannot be an e-mail address, or None (a loose check: one ``@``, no
    spaces, printable, at most 254 characters)."""
    if (not isinstance(email, str) or len(email) > MAX_EMAIL or not email.isprintable()
            or email.count("@") != 1 or " " in email or email.startswith("@")
            or email.endswith("@")):
        return f"an e-mail address is at most {MAX_EMAIL} printable characters with one '@'"
    return None


def mint_token(secret: str, user: str, *, name: str | None = None, email: str | None = None,
               role: str = "member", expires_in: float = MAX_LIFETIME,
               now: float | None = None) -> str:
    """A signed token; ValueError for a claim the server would refuse."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    for problem in (user_problem(user), name and name_problem(name),
                    email and email_problem(email)):
        if problem:
            raise ValueError(problem)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": user, "name": name or user, "role": role, "iat": issued,
                              "exp": issued + int(expires_in)}
    if email:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str, secret: str, max_lifetime: float = MAX_LIFETIME,
                 now: float | None = None) -> Claims:
    """The token's claims, every one checked here (the only place): AuthError, whose message
    names the rule and never echoes a claim's value, for anything else."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError("bad token signature") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token ({type(exc).__name__})") from None
    except Exception as exc:  # PyJWT on hostile JSON: exp 1e400 (OverflowError), deep nesting
        raise AuthError(f"invalid token ({type(exc).__name__})") from None
    if not isinstance(claims, dict):
        raise AuthError("invalid token (claims must be a JSON object)")
    now = time.time() if now is None else now
    exp = _number(claims.get("exp"))
    if exp is None:
        raise AuthError("invalid token (exp must be a number of seconds since the epoch)")
    iat = claims.get("iat")
    start = _number(iat) if iat is not None else now
    if start is None:
        raise AuthError("invalid token (iat must be a number of seconds since the epoch)")
    if exp - min(start, now) > max_lifetime:
        raise AuthError(f"invalid token (lives longer than this server's maximum of "
                        f"{max_lifetime:g} s; mint a shorter-lived one)")
    user, role = claims.get("sub"), claims.get("role", "member")
    problem = user_problem(user)
    if problem:
        raise AuthError(f"invalid token (sub: {problem})")
    if role not in ROLES:
        raise AuthError("invalid token (role must be member or admin)")
    name, email = claims.get("name", user), claims.get("email")
    problem = name_problem(name) or (email_problem(email) if email is not None else None)
    if problem:
        raise AuthError(f"invalid token ({'name' if name_problem(name) else 'email'}: "
                        f"{problem})")
    assert isinstance(user, str) and isinstance(name, str)  # checked just above
    return Claims(user, name, email, role, exp)


def _number(value: object) -> float | None:
    """A NumericDate (RFC 7519: seconds, an integer or not) within a sane range, else None:
    ``10**400`` or ``1e400`` must be refused, not overflow a float later."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and not 0 <= value <= 1 << 40:
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number <= 1 << 40 else None


