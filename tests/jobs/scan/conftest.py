"""The scan tests' shared helpers live in scan_fixtures beside this file; fixtures of more than one module here."""

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture()
def azurite(tmp_path):
    """A local Azure Blob server (Azurite) with two accounts: account name → connection string. Skips without
    adlfs (the `azure` extra) or Azurite's `azurite-blob` command on PATH (`npm install azurite`)."""
    import base64
    import socket
    import subprocess
    import time

    pytest.importorskip("adlfs")
    command = shutil.which("azurite-blob")
    if command is None:
        pytest.skip("Azurite is not installed (`npm install azurite`, `azurite-blob` on PATH)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    keys = {name: base64.b64encode(f"{name}-key-for-tests-only".encode()).decode() for name in ("acct1", "acct2")}
    server = subprocess.Popen(
        [command, "--silent", "--skipApiVersionCheck", "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--location", str(tmp_path / "azurite")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "AZURITE_ACCOUNTS": ";".join(f"{n}:{k}" for n, k in keys.items())})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("Azurite did not start")
                time.sleep(0.1)
        yield {name: f"DefaultEndpointsProtocol=http;AccountName={name};AccountKey={key};"
                     f"BlobEndpoint=http://127.0.0.1:{port}/{name};" for name, key in keys.items()}
    finally:
        server.terminate()
        server.wait(timeout=10)


AUTH_FAILURE = ("Server failed to authenticate the request.\nRequestId:00000000-0000\nErrorCode:AuthorizationFailure\n"
                "Content: <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>AuthorizationFailure</Code>\n</Error>")


@pytest.fixture()
def refusing_store():
    """Protocols of a store that refuses: ``refusing://`` every request, ``unopenable://`` even to be opened, with
    a many-line error as Azure's (an HttpResponseError quotes its XML body). Stand-ins: the real one needs Azurite."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class Refusing(MemoryFileSystem):
        protocol = "refusing"

        def _refuse(self, *args, **kwargs):
            raise PermissionError(AUTH_FAILURE)

        info = ls = find = exists = cat_file = pipe_file = _refuse

    class Unopenable(MemoryFileSystem):
        protocol = "unopenable"

        def __init__(self, *args, **kwargs):
            raise ValueError(f"unable to connect to account for {AUTH_FAILURE}")

    for cls in (Refusing, Unopenable):  # left registered: protocols of these tests' own
        fsspec.register_implementation(cls.protocol, cls, clobber=True)
    return AUTH_FAILURE.splitlines()[0]
