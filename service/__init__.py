"""towerflow's online recall over HTTP: a FastAPI app answering from the published
version and hot-swapping to each newly published one after verifying it.

Importing it does no I/O and never imports Prefect.
"""

from service.app import create_app
from service.settings import ApiSettings
from service.state import RecallService, Rejection, ServiceStatus

__all__ = ["ApiSettings", "RecallService", "Rejection", "ServiceStatus", "create_app"]
