"""`formrelay demo` and `formrelay decrypt-demo`: everything on one machine with a
throw-away clinician key, and that key's view of a demo mail (ops/demo.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.command()
@click.option("--dir", "folder", default="demo", show_default=True, type=click.Path(),
              help="Folder for the throw-away key, config, data and mail.")
@click.option("--port", default=8000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--no-serve", is_flag=True, help="Only prepare the folder, print, and exit.")
def demo(folder: str, port: int, no_serve: bool) -> None:
    """Run everything locally: a throw-away clinician key, a demo config, the service
    on 127.0.0.1 and mail written to a folder; prints the URLs to open.

    \b
    Example:
      formrelay demo --port 8000
    """
    from ..ops.demo import prepare_demo, run_demo

    info = prepare_demo(Path(folder), port)
    for line in info.lines:
        click.echo(line)
    if not no_serve:
        run_demo(info)


@click.command("decrypt-demo")
@click.option("--dir", "folder", default="demo", show_default=True, type=click.Path(),
              help="The demo folder (its clinician key decrypts).")
@click.argument("message", type=click.File("rb"))
def decrypt_demo(folder: str, message: Any) -> None:
    """Show a demo message as a mail program would: decrypted with the demo's clinician
    key, its text readable (not raw MIME), its attachments named. MESSAGE: a mail from
    the demo's mail folder, or - for `formrelay ciphertext` piped in.

    \b
    Example:
      formrelay decrypt-demo --dir demo demo/mail/FR-7K2M-Q9XD.eml
    """
    from ..ops.demo import readable_mail

    click.echo(readable_mail(Path(folder), message.read()), nl=False)


COMMANDS: list[click.Command] = [demo, decrypt_demo]
