"""`python -m towerflow` = the `towerflow` console script."""

from cli.app import app

app()
