"""`python -m towerflow` = the `towerflow` console script."""

from towerflow.cli import app

app()
