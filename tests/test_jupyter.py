"""The companion opens in JupyterLab: a server on the loopback address serves the method notebook."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_serves_the_method_notebook(tmp_path):
    if shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("needs jupyterlab (pip install -e '.[pipeline]')")
    port, token = _free_port(), "alpkd-test"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"))
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/contents/notebooks/00_method.ipynb?token={token}"
        deadline, reply = time.time() + 90, None
        while time.time() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    reply = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.5)
        assert reply is not None, f"no answer from the server: {server.stderr.read() if server.poll() is not None else ''}"
        assert reply["type"] == "notebook" and reply["name"] == "00_method.ipynb"
        assert reply["content"]["cells"][0]["source"].startswith("# 00 · The method")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as response:
            assert response.status == 200  # the JupyterLab page itself
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    assert server.returncode is not None
