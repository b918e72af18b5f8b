import tracemalloc
from tests.cli import test_cli as t
from tests.cli.test_cli import server  # noqa
def peak(server, path):
    tracemalloc.start(); r = t.cli(server, "upload", "bigx", str(path), "--format", "json"); _, p = tracemalloc.get_traced_memory(); tracemalloc.stop()
    assert r.exit_code == 0; return p
def test_peak(server, tmp_path):
    t.ok(t.cli(server, "models", "create", "bigx", "--runtime", "echo"))
    for pad in (0, 0, 1024*1024, 3*1024*1024, 0, 3*1024*1024):
        print("PEAK", pad, peak(server, t.echo_artifact(tmp_path / f"f{pad}.bin", 5.0, padding=pad)))
