"""Users with roles and hashed passwords; API keys stored as hashes with scopes."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core import clock
from core.db import Base, IdMixin
from core.errors import Conflict, Forbidden, Invalid, Unauthorized
from core.text import check_text


class Role(StrEnum):
    admin = "admin"
    marketer = "marketer"
    sales = "sales"


class Scope(StrEnum):
    leads_read = "leads:read"
    leads_write = "leads:write"
    forms = "forms:write"
    imports = "import"
    admin = "admin"


ROLE_SCOPES: dict[Role, set[str]] = {
    Role.admin: {s.value for s in Scope},
    Role.marketer: {Scope.leads_read, Scope.leads_write, Scope.forms, Scope.imports},
    Role.sales: {Scope.leads_read},
}

_hasher = PasswordHasher()
KEY_PREFIX = "nrt_"


class User(IdMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class ApiKey(IdMixin, Base):
    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(20), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]]
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _key_hash(raw: str) -> str:
    # API keys are 256-bit random strings, so a fast hash is enough (no brute force possible).
    return hashlib.sha256(raw.encode()).hexdigest()


async def add_user(session: AsyncSession, email: str, password: str, role: str, name: str = "") -> User:
    if role not in Role.__members__:
        raise Invalid(f"role must be one of {', '.join(Role)}", field="role")
    if len(password) < 8:
        raise Invalid("password must have at least 8 characters", field="password")
    email = email.strip().lower()
    if "@" not in email:
        raise Invalid("not an email address", field="email")
    if await session.scalar(select(User).where(User.email == email)):
        raise Conflict(f"user {email} exists", field="email")
    user = User(email=email, name=name, role=role, password_hash=hash_password(password))
    session.add(user)
    await session.flush()
    return user


async def authenticate_user(session: AsyncSession, email: str, password: str) -> User:
    user = await session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not verify_password(user.password_hash, password):
        raise Unauthorized("wrong email or password", field="password")
    return user


async def create_api_key(
    session: AsyncSession, name: str, scopes: list[str], user: User | None = None
) -> tuple[ApiKey, str]:
    """Returns the stored key and the raw secret, which is shown once and never stored."""
    check_text(name, "name")
    known = {s.value for s in Scope}
    unknown = [s for s in scopes if s not in known]
    if unknown or not scopes:
        raise Invalid(f"scopes must be some of {', '.join(sorted(known))}", field="scopes")
    if user is not None:
        allowed = ROLE_SCOPES[Role(user.role)]
        if not set(scopes) <= allowed:
            raise Forbidden(f"a {user.role} cannot grant {sorted(set(scopes) - allowed)}", field="scopes")
    prefix = secrets.token_hex(4)
    raw = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        name=name, prefix=prefix, key_hash=_key_hash(raw), scopes=sorted(set(scopes)),
        user_id=user.id if user else None,
    )
    session.add(key)
    await session.flush()
    return key, raw


async def resolve_api_key(session: AsyncSession, raw: str) -> ApiKey:
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == _key_hash(raw)))
    if key is None or key.revoked_at is not None:
        raise Unauthorized("API key is not valid", field="authorization")
    return key


def require(key: ApiKey, *scopes: str) -> None:
    """The key holds one of `scopes` (admin holds them all)."""
    if Scope.admin.value in key.scopes or any(scope in key.scopes for scope in scopes):
        return
    wanted = " or ".join(f"'{scope}'" for scope in scopes)
    raise Forbidden(f"this API key lacks the {wanted} scope", field="authorization")
