"""towerflow's application layer and Python API (no Prefect, typer or FastAPI)."""
