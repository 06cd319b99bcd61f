"""The OPSS client runtime (installed as ``opss.client``)."""
