"""towerflow's command line (typer): ``cli.app`` registers the commands of the sibling
modules; ``python -m cli`` runs it, as does the ``towerflow`` console script."""
