"""``python -m cli`` = the ``towerflow`` console script."""

from cli.app import app

app()
