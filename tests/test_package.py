"""The package's import contract: the scheduling core never pulls in torch."""

import subprocess
import sys


def test_import_opss_and_sched_does_not_import_torch():
    code = "import sys, opss, opss.sched, opss.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_deployable_halves_import_under_opss_namespace():
    import opss.client
    import opss.server

    assert opss.client.__name__ == "opss.client"
    assert opss.server.__name__ == "opss.server"
