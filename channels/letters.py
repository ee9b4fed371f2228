"""The print house's file: every postal message the sender has passed (state sent), with the address
and the personalised text it was made with, as CSV. Each row is a ledger entry, so a letter is in one
export only when the exports are taken by time (`since`), and never sent twice."""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.ledger import SENT
from channels.models import messages_t
from channels.postal import PostalRow, write_csv


async def letters(session: AsyncSession, campaign: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> list[PostalRow]:
    m = messages_t.c
    query = select(m.id, m.payload).where(m.channel == "postal", m.state == SENT).order_by(m.sent_at, m.id)
    if campaign:
        query = query.where(m.campaign == campaign)
    if since is not None:
        query = query.where(m.sent_at >= since)
    if until is not None:
        query = query.where(m.sent_at < until)
    rows = []
    for message_id, payload in await session.execute(query):
        letter = (payload or {}).get("letter") or {}
        address = letter.get("address") or {}
        rows.append(PostalRow(
            message_id=str(message_id), name=str(address.get("name") or ""),
            postal_code=str(address.get("postal_code") or ""), country=str(address.get("country") or ""),
            region=str(address.get("region") or ""), city=str(address.get("city") or ""),
            street=str(address.get("address") or ""), text=str(letter.get("text") or ""),
        ))
    return rows


async def export(session: AsyncSession, out: TextIO, *, campaign: str | None = None, since: datetime | None = None,
                 until: datetime | None = None, excel: bool = False) -> int:
    """Write the letters as CSV; `excel`: a BOM and ';' so Excel in a Russian locale opens it right."""
    rows = await letters(session, campaign, since, until)
    return write_csv(rows, out, delimiter=";" if excel else ",", bom=excel)
