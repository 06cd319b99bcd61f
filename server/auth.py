"""Bearer-token authentication as a server interceptor."""

from __future__ import annotations

import hmac

import grpc

#: Calls that never need a token (load balancers and orchestrators probe health).
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Rejects any call lacking metadata ``authorization: Bearer <token>`` with UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("token: expected a non-empty token, got an empty one")
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method or ""
        if method.startswith(OPEN_PREFIXES):
            return continuation(handler_call_details)
        got = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        got = got.encode() if isinstance(got, str) else bytes(got)
        if hmac.compare_digest(got, self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        reason = ("missing metadata 'authorization: Bearer <token>'" if not got
                  else "bad token in metadata 'authorization'")
        return _deny(handler, f"unauthenticated: {reason}")


def _deny(handler, message: str):
    """A handler of the same streaming shape as ``handler`` that answers UNAUTHENTICATED."""

    def abort(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED only to the authorized
        return grpc.unary_unary_rpc_method_handler(abort)
    streaming = (handler.request_streaming, handler.response_streaming)
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[streaming]
    # bytes in, nothing parsed: an unauthenticated peer never reaches a deserializer
    return make(abort, request_deserializer=None, response_serializer=None)
