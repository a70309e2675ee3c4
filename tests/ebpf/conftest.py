"""eBPF probe tests: real programs attached to this kernel, real peer processes."""

import pytest

from ebpf_helpers import Capture, Netns, bpf_unavailable

_why = bpf_unavailable()


def pytest_collection_modifyitems(config, items):
    if _why is None:
        return
    for item in items:
        if "tests/ebpf/" in str(item.fspath) and "needs_bpf" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=_why))


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_bpf: loads BPF programs into the kernel")


@pytest.fixture(scope="module")
def capture():
    cap = Capture()
    yield cap
    cap.close()


@pytest.fixture
def netns():
    ns = Netns()
    yield ns
    ns.delete()


@pytest.fixture(scope="session")
def cert(tmp_path_factory):
    """A self-signed certificate and key (openssl CLI)."""
    import subprocess
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    return str(crt), str(key)
