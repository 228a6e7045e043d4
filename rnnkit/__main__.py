"""``python -m rnnkit``: the rnnkit command."""

from rnnkit.cli import app

app(prog_name="rnnkit")
