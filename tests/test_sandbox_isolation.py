"""The upload sandbox isolates its child: an allowlisted environment, no network, nobody where it can be
(models.sandbox, models.isolation)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys

import pytest

from models import sandbox
from models.isolation import _open_to_others
from tests.conftest import ROOT

SECRETS = {"CONVSCOPE_API_KEYS": "alice:secret", "AWS_SECRET_ACCESS_KEY": "hunter2", "REDIS_URL": "redis://x:6379",
           "CONVSCOPE_S3_SECRET_ACCESS_KEY": "s3", "GITHUB_TOKEN": "ghp_x", "HOME": "/root", "LANG": "C.UTF-8"}
OWN = {"PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONUNBUFFERED",
       "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE"}
LINUX = platform.system() == "Linux"


@pytest.fixture(scope="module")
def seen():
    """What the sandbox's child sees, started from an environment full of secrets."""
    before = dict(os.environ)
    os.environ.update(SECRETS)
    try:
        return sandbox.check()
    finally:
        os.environ.clear()
        os.environ.update(before)


def test_the_child_sees_only_the_allowlisted_environment(seen):
    names = set(seen["environment"])
    assert names <= set(sandbox.ENVIRONMENT) | OWN, names - set(sandbox.ENVIRONMENT) - OWN
    assert "LANG" in names and not names & {"CONVSCOPE_API_KEYS", "AWS_SECRET_ACCESS_KEY", "REDIS_URL", "HOME"}


@pytest.mark.skipif(not LINUX, reason="network isolation (namespaces, seccomp) is Linux only")
def test_the_child_cannot_reach_redis_on_loopback(seen):
    with socket.create_connection(("127.0.0.1", 6379), timeout=2):
        pass  # this process can: the refusal below is the sandbox's doing
    if seen["isolation"]["network_namespace"].startswith("skipped") and \
            seen["isolation"]["socket_filter"].startswith("skipped"):
        pytest.skip(f"this platform allows neither: {seen['isolation']}")
    assert seen["tcp 127.0.0.1:6379"].startswith("refused"), seen


@pytest.mark.skipif(not LINUX or os.geteuid() != 0, reason="dropping to nobody needs root")
def test_a_root_child_becomes_nobody():
    """The mechanism, in a throw-away process (the real child skips it where nobody could not import Python)."""
    code = "import os; from models.isolation import _drop_to_nobody; print(_drop_to_nobody([]), os.getuid(), os.getgroups())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}, check=True).stdout.split()
    assert out[0] == "nobody" and out[-2] != "0" and out[-1] == "[]", out


def test_folders_closed_to_other_users_are_seen():
    import shutil
    import tempfile

    top = tempfile.mkdtemp(prefix="convscope-isolation-")  # in the world-writable temp folder, not pytest's 0700 one
    try:
        os.chmod(top, 0o755)
        closed, open_ = os.path.join(top, "closed"), os.path.join(top, "open")
        os.mkdir(closed, 0o700)
        os.mkdir(open_, 0o755)
        os.chmod(closed, 0o700)
        os.chmod(open_, 0o755)
        assert _open_to_others(open_) and not _open_to_others(closed)
        assert not _open_to_others(os.path.join(closed, "anything"))
    finally:
        shutil.rmtree(top)


@pytest.mark.skipif(not LINUX, reason="the socket filter is Linux only")
def test_unix_sockets_still_work_in_the_child():
    """The filter refuses network sockets only: a library's AF_UNIX socketpair is fine."""
    code = ("import socket; from models.isolation import isolate; r = isolate([]); a, b = socket.socketpair(); "
            "a.send(b'x'); print(b.recv(1) == b'x', r.socket_filter)\n"
            "try:\n    socket.socket(socket.AF_INET6)\n    print('inet6 allowed')\nexcept OSError:\n    print('inet6 refused')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}, check=True).stdout
    assert out.startswith("True") and ("inet6 refused" in out or "skipped" in out), out
