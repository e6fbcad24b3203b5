"""convscope-client: a typed Python client (and `convscope-client` command line) for the convscope HTTP API."""

from convscope_client.client import AsyncClient, Client
from convscope_client.errors import ConvscopeError, JobFailed
from convscope_client.models import AsyncJob, Job

__all__ = ["AsyncClient", "AsyncJob", "Client", "ConvscopeError", "Job", "JobFailed"]
__version__ = "0.1.0"
