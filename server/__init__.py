"""The OPSS server runtime (installed as ``opss.server``).

``create_server(ServerConfig(...)) -> (grpc.Server, port)`` runs a server
in-process; ``build_server`` returns the full :class:`OpssServer` handle;
``opss-server`` (``opss.server.cli:main``, also ``python -m opss.server``) is the command.
"""

from .app import OpssServer, build_server, create_server
from .config import DEFAULT_MODELS, ServerConfig

__all__ = ["DEFAULT_MODELS", "OpssServer", "ServerConfig", "build_server", "create_server"]
