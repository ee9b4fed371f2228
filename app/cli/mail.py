"""`nurture bounce-classify | dkim new`: returned mail read offline, and the keys outgoing mail is
signed with."""

from __future__ import annotations

from pathlib import Path

import typer

from core.errors import NurtureError
from core.settings import get_settings

dkim_cli = typer.Typer(help="DKIM keys for signing outgoing mail.", no_args_is_help=True)


def bounce_classify(
    files: list[str] = typer.Argument(..., metavar="FILE...", help="Raw messages (.eml): bounces, complaints, replies"),
) -> None:
    """Classify returned mail: one JSON line per recipient (file, recipient, status, reply_code, reason,
    hard). Exit 1 when a file cannot be read (the others are still classified)."""
    import json

    from channels.email.bounces import classify

    unreadable = False
    for name in files:
        try:
            raw = Path(name).read_bytes()
        except OSError as exc:
            typer.echo(f"error: cannot read {name}: {exc.strerror}", err=True)
            unreadable = True
            continue
        for r in classify(raw).recipients:
            typer.echo(json.dumps({
                "file": name, "recipient": r.recipient, "status": r.status, "reply_code": r.reply_code,
                "reason": r.reason, "hard": r.hard,
            }, ensure_ascii=False))
    if unreadable:
        raise typer.Exit(1)


@dkim_cli.command("new")
def dkim_new(
    domain: str = typer.Option(..., help="The signing domain (d=), usually the From address's domain"),
    selector: str = typer.Option(..., help="The key's name under _domainkey (s=), e.g. 2026a"),
    algorithm: str = typer.Option("rsa", help="rsa (2048-bit, every receiver) or ed25519 (RFC 8463)"),
    out: Path = typer.Option(None, help="Private key file (default <data dir>/dkim/<selector>.<domain>.<alg>.pem)"),
) -> None:
    """Make a DKIM key: write the private key (mode 0600, never over an existing file) and print the
    DNS TXT record to publish."""
    from channels.email.dkim import new_key, write_private_key

    try:
        key = new_key(algorithm, selector, domain)
        path = out or get_settings().data_dir / "dkim" / f"{key.selector}.{key.domain}.{key.algorithm}.pem"
        write_private_key(path, key)
    except NurtureError as exc:
        typer.echo(f"error ({exc.field}): {exc.message}" if exc.field else f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"error: cannot write {exc.filename or out}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"private key written to {path} (keep it secret)")
    typer.echo("publish this DNS TXT record:")
    typer.echo(f"name:  {key.dns_name}")
    typer.echo(f"value: {key.dns_value}")
    typer.echo("or, as a zone file line:")
    typer.echo(key.zone_line)
