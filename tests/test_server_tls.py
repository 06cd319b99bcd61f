"""TLS between opss-client's transport and opss-server, on loopback, with throwaway certificates.

A CA made here signs the server's certificate (localhost, 127.0.0.1) and a client's; a
second, unrelated CA signs a rogue client certificate. Nothing here is committed: every
key is generated into the test's temporary folder (``openssl``). Checked: a client
that trusts the CA talks TLS (ListModels, Probe, an Infer whose output equals the full
model's); one with another CA, a plaintext client against TLS, a TLS client against
plaintext and a client without (or with a foreign) certificate against mutual TLS each
get one line naming the problem, marked fatal; a token is never sent in clear text to
a remote address.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opss import models
from opss.client.grpc_transport import GrpcTransport, is_loopback
from opss.client.runtime import CallFailed, CallHeader
from opss.errors import OpssError
from opss.server import ServerConfig, build_server

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "resnet18"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "1", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             cwd=folder)


def _signed(folder: Path, name: str, ca: str, san: str) -> None:
    (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
             cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "rogue")
    _signed(d, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    _signed(d, "client", "ca", "DNS:opss-client")
    _signed(d, "intruder", "rogue", "DNS:opss-client")
    return d


def _server(pki: Path, **kw):
    return build_server(ServerConfig(models=(MODEL,), small=True, device="cpu", warmup_runs=0,
                                     max_inflight=2, max_workers=8, **kw))


@pytest.fixture(scope="module")
def tls_server(pki):
    h = _server(pki, tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"))
    yield h
    h.stop(0).wait(10)


@pytest.fixture(scope="module")
def mtls_server(pki):
    h = _server(pki, tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"),
                tls_client_ca=str(pki / "ca.pem"))
    yield h
    h.stop(0).wait(10)


@pytest.fixture(scope="module")
def plain_server(pki):
    h = _server(pki)
    yield h
    h.stop(0).wait(10)


def _infer(transport: GrpcTransport) -> None:
    """An Infer over ``transport`` whose output equals the full model's."""
    model = models.get_model(MODEL, seed=0)
    x = models.example_input(MODEL, small=True, seed=4)
    call = transport.open(CallHeader(request_id="tls", model=MODEL, fingerprint=models.fingerprint(model),
                                     client_set=("x",), cut=("x",), wire_dtype="float32"), timeout=30)
    for chunk in call.chunks("x", x):
        call.push(chunk)
    with torch.no_grad():
        torch.testing.assert_close(call.finish().output, model(x))


def _refused(transport: GrpcTransport) -> CallFailed:
    try:
        with pytest.raises(CallFailed) as info:
            transport.list_models(timeout=5)
    finally:
        transport.close()
    assert info.value.fatal, info.value.reason
    assert "\n" not in info.value.reason
    return info.value


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_a_client_trusting_the_ca_talks_tls(tls_server, pki, host) -> None:
    t = GrpcTransport(f"{host}:{tls_server.port}", tls_ca=str(pki / "ca.pem"), token=None)
    try:
        assert [m.name for m in t.list_models().models] == [MODEL]
        assert [size for size, _ in t.probe([1000, 5000])] == [1000, 5000]
        _infer(t)
    finally:
        t.close()


def test_the_wrong_ca_is_named(tls_server, pki) -> None:
    e = _refused(GrpcTransport(f"localhost:{tls_server.port}", tls_ca=str(pki / "rogue.pem")))
    assert "not signed by the --tls-ca" in e.reason, e.reason


def test_plaintext_against_tls_and_tls_against_plaintext_are_named(tls_server, plain_server, pki) -> None:
    e = _refused(GrpcTransport(f"localhost:{tls_server.port}"))
    assert "speaks TLS but this client connects in plaintext" in e.reason, e.reason
    assert "unreachable" not in e.reason
    e = _refused(GrpcTransport(f"localhost:{plain_server.port}", tls_ca=str(pki / "ca.pem")))
    assert "does not speak TLS" in e.reason, e.reason


def test_mutual_tls(mtls_server, pki) -> None:
    ca = str(pki / "ca.pem")
    t = GrpcTransport(f"localhost:{mtls_server.port}", tls_ca=ca, tls_cert=str(pki / "client.pem"),
                      tls_key=str(pki / "client.key"))
    try:
        assert [m.name for m in t.list_models().models] == [MODEL]
        _infer(t)
    finally:
        t.close()
    e = _refused(GrpcTransport(f"localhost:{mtls_server.port}", tls_ca=ca))
    assert "requires a client certificate" in e.reason, e.reason
    e = _refused(GrpcTransport(f"localhost:{mtls_server.port}", tls_ca=ca, tls_cert=str(pki / "intruder.pem"),
                               tls_key=str(pki / "intruder.key")))
    assert "rejected this client's certificate" in e.reason, e.reason


def test_a_token_is_never_sent_in_clear_text_to_a_remote_address(pki) -> None:
    for remote in ("192.0.2.10:50051", "example.org:50051", "[2001:db8::1]:50051"):
        assert not is_loopback(remote)
        with pytest.raises(OpssError, match="refusing to send the bearer token in clear text"):
            GrpcTransport(remote, token="s3cret")
        GrpcTransport(remote, token="s3cret", tls_ca=str(pki / "ca.pem")).close()  # over TLS: fine
    for local in ("127.0.0.1:50051", "localhost:50051", "[::1]:50051", "127.8.0.1:1"):
        assert is_loopback(local)
        GrpcTransport(local, token="s3cret").close()
    with pytest.raises(OpssError, match="expected both"):
        GrpcTransport("localhost:1", tls_ca=str(pki / "ca.pem"), tls_cert=str(pki / "client.pem"))
    with pytest.raises(OpssError, match="--tls-ca /no/such.pem: cannot read it"):
        GrpcTransport("localhost:1", tls_ca="/no/such.pem")


def test_the_client_cli_refuses_a_clear_text_token_in_one_line(tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    out = subprocess.run([sys.executable, "-m", "opss.client", "--model", MODEL, "--small", "--strategy", "co",
                          "--link", "wifi", "--server", "192.0.2.10:50051", "--token-file", str(token),
                          "--runs", "1", "--quiet"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("opss-client: error: --token-file: refusing") and "Traceback" not in out.stderr
