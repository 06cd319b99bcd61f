"""The OPSS server runtime (installed as ``opss.server``).

``build_server(ServerConfig(...))`` runs a server in-process and returns its
:class:`OpssServer` handle (gRPC server, port, servicer, store, health);
``opss-server`` (``opss.server.cli:main``, also ``python -m opss.server``) is the command.
"""

from .app import OpssServer, build_server
from .config import DEFAULT_MODELS, ServerConfig

__all__ = ["DEFAULT_MODELS", "OpssServer", "ServerConfig", "build_server"]
