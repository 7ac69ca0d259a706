"""``python -m tests.integration.archive_cli archive|sql ...``: the history commands on an app
of their own, as a real process (the tests kill it); ``marketbus_cli`` registers them too."""

from __future__ import annotations

import typer

from marketbus_cli.history_cmds import register

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
register(app)

if __name__ == "__main__":
    app()
