"""The committed stubs in opss/v1/ are exactly what the .proto generates.

Regenerates with scripts/gen_proto.sh into a temp dir and compares byte for
byte, so an edit to proto/opss/v1/opss.proto without regenerating (or a hand
edit of a stub) fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUBS = ("opss_pb2.py", "opss_pb2.pyi", "opss_pb2_grpc.py")


def test_committed_stubs_match_proto(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
                   check=True, env=env, cwd=ROOT)
    for name in STUBS:
        fresh = (tmp_path / "opss" / "v1" / name).read_bytes()
        committed = (ROOT / "opss" / "v1" / name).read_bytes()
        assert fresh == committed, (
            f"opss/v1/{name} differs from what proto/opss/v1/opss.proto generates; "
            "run scripts/gen_proto.sh and commit the result")


@pytest.mark.parametrize("rpc", ["Infer", "Probe", "ListModels"])
def test_service_exposes_rpc(rpc: str) -> None:
    from opss.v1 import opss_pb2

    service = opss_pb2.DESCRIPTOR.services_by_name["Opss"]
    method = service.methods_by_name[rpc]
    streaming = {"Infer": True, "Probe": True, "ListModels": False}[rpc]
    assert method.client_streaming is streaming
    assert method.server_streaming is False
    assert opss_pb2.DESCRIPTOR.package == "opss.v1"
