"""``python -m marketbus_cli``: the ``marketbus`` command without its console script."""

from marketbus_cli import app

app(prog_name="marketbus")
