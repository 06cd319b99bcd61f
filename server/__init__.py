"""The OPSS server runtime (installed as ``opss.server``)."""
