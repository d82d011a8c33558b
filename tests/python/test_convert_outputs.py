"""Where convert and export write: never over an input, with ordinary permissions, and no temporaries left behind by
SIGTERM, SIGHUP or SIGKILL (real signals sent to real `zipmoe` processes)."""

import errno
import os
import select
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("gguf")

import zipmoe  # noqa: E402
from tiny_models import make_tiny_gguf, make_tiny_model  # noqa: E402
from zipmoe.conversion import outputs  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model("qwen2_moe", tmp_path_factory.mktemp("hf") / "qwen2_moe")


@pytest.fixture(scope="module")
def gguf_model(model, tmp_path_factory):
    return make_tiny_gguf(model, tmp_path_factory.mktemp("gguf") / "qwen2_moe.gguf", "bf16")


@pytest.fixture(scope="module")
def container(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("zmoe") / "m.zmoe"
    zipmoe.convert(model, path, threads=1)
    return path


@pytest.fixture(scope="module")
def gguf_container(gguf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("zmoe") / "g.zmoe"
    zipmoe.convert(gguf_model, path, threads=1)
    return path


def entries(folder):
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------------------------- signals

# Runs the zipmoe CLI and pauses inside its work (after the 3rd tensor written or rebuilt): prints READY, sleeps
# PAUSE seconds, then goes on. argv: PAUSE IGNORE_SIGHUP zipmoe-arguments...
_CHILD = textwrap.dedent("""
    import signal, sys, time
    import zipmoe, zipmoe.cli
    from zipmoe.conversion import exporter

    pause, ignore_hup, argv = float(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:]
    # as a terminal session starts it (a test run under nohup would otherwise hand down an ignored SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hup else signal.SIG_DFL)
    calls = []

    def pausing(function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            calls.append(1)
            if len(calls) == 3:
                print("READY", flush=True)
                time.sleep(pause)
            return result
        return wrapper

    zipmoe.ContainerWriter.add_tensor = pausing(zipmoe.ContainerWriter.add_tensor)
    exporter.Assembler.assemble = pausing(exporter.Assembler.assemble)
    sys.exit(zipmoe.cli.main(argv))
""")


def start_paused(*args, pause=60.0, ignore_hup=False):
    """A zipmoe process stopped in the middle of its work (READY read from it)."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(pause), "1" if ignore_hup else "0", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    if not ready or proc.stdout.readline().strip() != "READY":
        proc.kill()
        pytest.fail(f"the zipmoe process did not reach its work: {proc.communicate()}")
    return proc


def finish(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_during_convert_leaves_the_old_output_and_no_temporary(signum, model, tmp_path):
    out = tmp_path / "m.zmoe"
    out.write_bytes(b"previous")
    proc = start_paused("convert", model, "-o", out, "-q", "--threads", "1")
    proc.send_signal(signum)
    code, _, err = finish(proc)
    assert code == -signum, err  # the process still ends by the signal, after cleaning up
    assert entries(tmp_path) == ["m.zmoe"] and out.read_bytes() == b"previous"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_during_export_removes_the_partial_folder(signum, container, tmp_path):
    proc = start_paused("export", container, "--to", "safetensors", tmp_path / "back", "-q")
    assert len(entries(tmp_path)) == 1  # the folder being filled, under its temporary name
    proc.send_signal(signum)
    code, _, err = finish(proc)
    assert code == -signum, err
    assert entries(tmp_path) == []


def test_signal_during_gguf_export_leaves_nothing(gguf_container, tmp_path):
    proc = start_paused("export", gguf_container, "--to", "gguf", tmp_path / "back.gguf", "-q")
    proc.send_signal(signal.SIGTERM)
    assert finish(proc)[0] == -signal.SIGTERM
    assert entries(tmp_path) == []


def test_an_ignored_sighup_stays_ignored(model, tmp_path):
    """nohup zipmoe convert ...: the hangup does not stop it."""
    proc = start_paused("convert", model, "-o", tmp_path / "m.zmoe", "-q", pause=1.0, ignore_hup=True)
    proc.send_signal(signal.SIGHUP)
    code, _, err = finish(proc)
    assert code == 0, err
    assert zipmoe.verify_against(tmp_path / "m.zmoe", model)["ok"]


def test_sigkill_leaves_only_what_the_next_run_removes(model, container, tmp_path):
    proc = start_paused("export", container, "--to", "safetensors", tmp_path / "back", "-q")
    proc.kill()
    proc.wait()
    (stale,) = entries(tmp_path)
    assert stale.startswith(f"back.zipmoe-tmp-{proc.pid}-")  # recognizable: target, marker, the dead pid
    proc = start_paused("convert", model, "-o", tmp_path / "m.zmoe", "-q", "--threads", "1")
    proc.kill()
    proc.wait()
    # a container is written unnamed (O_TMPFILE) where the filesystem allows it: nothing, or one stale name
    assert len(entries(tmp_path)) <= 2
    zipmoe.export(container, "safetensors", tmp_path / "again")
    assert entries(tmp_path) == ["again"]


def test_the_sweep_spares_live_writers(tmp_path):
    mine = tmp_path / f"a.zmoe{outputs.TEMPORARY_MARKER}{os.getpid()}-abcdef"
    mine.write_bytes(b"being written")
    # a temporary whose pid is gone here but whose lock is held (a writer in another PID namespace or host)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    foreign = tmp_path / f"b.zmoe{outputs.TEMPORARY_MARKER}{int(dead.stdout)}-abcdef"
    foreign.write_bytes(b"being written elsewhere")
    stale = tmp_path / f"c.zmoe{outputs.TEMPORARY_MARKER}{int(dead.stdout)}-abcdef"
    stale.write_bytes(b"left by a killed writer")
    other = tmp_path / "c.zmoe.tmp-123"  # not zipmoe's
    other.write_bytes(b"x")
    import fcntl

    with open(foreign, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert outputs.sweep_stale_temporaries(tmp_path) == [stale.name]
    assert entries(tmp_path) == sorted([mine.name, foreign.name, other.name])


def test_named_temporaries_are_swept_after_a_kill(tmp_path):
    """Where O_TMPFILE is missing, a killed writer's file keeps its name; the next run removes it."""
    child = textwrap.dedent(f"""
        import os, sys
        from zipmoe.conversion.outputs import AtomicFile
        f = AtomicFile({str(tmp_path / 'x.gguf')!r}, unnamed=False)
        f.file.write(b"partial")
        f.file.flush()
        print("READY", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    (name,) = entries(tmp_path)
    assert name.startswith(f"x.gguf{outputs.TEMPORARY_MARKER}{proc.pid}-")
    assert outputs.sweep_stale_temporaries(tmp_path) == []  # its writer lives
    proc.kill()
    proc.wait()
    assert outputs.sweep_stale_temporaries(tmp_path) == [name]
    assert entries(tmp_path) == []


def test_the_api_restores_signal_handlers(model, tmp_path, monkeypatch):
    """zipmoe.convert called from a program takes SIGTERM over only while it runs, and never a program's own
    handler."""
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    seen = []
    original = zipmoe.ContainerWriter.add_tensor

    def spy(self, *args, **kwargs):
        seen.append((signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(zipmoe.ContainerWriter, "add_tensor", spy)
    previous_hup = signal.getsignal(signal.SIGHUP)
    own = lambda signum, frame: None  # noqa: E731
    signal.signal(signal.SIGHUP, own)
    try:
        zipmoe.convert(model, tmp_path / "m.zmoe", threads=1)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGHUP) is own
    finally:
        signal.signal(signal.SIGHUP, previous_hup)
    assert callable(seen[0][0]) and seen[0][0] is not signal.SIG_DFL  # taken over during the work
    assert seen[0][1] is own


# ------------------------------------------------------------------------------------ outputs vs inputs

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "zipmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_convert_refuses_to_overwrite_its_source(gguf_model, tmp_path):
    src = tmp_path / "same.gguf"
    src.write_bytes(gguf_model.read_bytes())
    run = run_cli("convert", src, "-o", src, "--generic", "-q")
    assert run.returncode == 1 and "would overwrite the input" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert src.read_bytes() == gguf_model.read_bytes()
    os.link(src, tmp_path / "hard.gguf")
    with pytest.raises(zipmoe.InvalidArgumentError, match="hard link"):
        zipmoe.convert(src, tmp_path / "hard.gguf", generic=True)
    os.symlink(src, tmp_path / "soft.gguf")
    with pytest.raises(zipmoe.InvalidArgumentError, match="overwrite the input"):
        zipmoe.convert(src, tmp_path / "soft.gguf", generic=True)
    assert src.read_bytes() == gguf_model.read_bytes()
    assert sorted(entries(tmp_path)) == ["hard.gguf", "same.gguf", "soft.gguf"]


def test_convert_refuses_an_output_inside_the_source_folder(model, tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    for p in model.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    before = entries(src)
    with pytest.raises(zipmoe.InvalidArgumentError, match="inside the input folder"):
        zipmoe.convert(src, src / "m.zmoe")
    with pytest.raises(zipmoe.InvalidArgumentError, match="overwrite the input"):
        zipmoe.convert(src, src / "model.safetensors")
    assert entries(src) == before
    with pytest.raises(zipmoe.IoError, match="is a folder"):
        zipmoe.convert(src, tmp_path)


def test_export_refuses_to_overwrite_the_container(gguf_container, tmp_path):
    c = tmp_path / "c.zmoe"
    c.write_bytes(gguf_container.read_bytes())
    run = run_cli("export", c, "--to", "gguf", c, "-q")
    assert run.returncode == 1 and "would overwrite the input" in run.stderr
    assert c.read_bytes() == gguf_container.read_bytes()
    os.link(c, tmp_path / "hard.gguf")
    with pytest.raises(zipmoe.InvalidArgumentError, match="hard link"):
        zipmoe.export(c, "gguf", tmp_path / "hard.gguf")
    assert c.read_bytes() == gguf_container.read_bytes()


# ------------------------------------------------------------------------------------------ permissions

@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_exports_get_ordinary_permissions(container, gguf_container, tmp_path, umask_022):
    zipmoe.export(gguf_container, "gguf", tmp_path / "back.gguf")
    assert stat.S_IMODE((tmp_path / "back.gguf").stat().st_mode) == 0o644
    zipmoe.export(container, "safetensors", tmp_path / "back")
    assert stat.S_IMODE((tmp_path / "back").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "back").iterdir()} == {0o644}
    zipmoe.convert(tmp_path / "back.gguf", tmp_path / "again.zmoe", generic=True)
    assert stat.S_IMODE((tmp_path / "again.zmoe").stat().st_mode) == 0o644


def _read_only(monkeypatch, folder):
    """Creating anything in ``folder`` fails with EROFS, as on a read-only mount (tests run as root, for whom
    a folder's mode bits do not stop writes)."""
    folder = os.path.realpath(folder)
    real_open, real_mkdir = os.open, os.mkdir

    def refused(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    def guarded_open(path, flags, *args, **kwargs):
        creates = flags & os.O_CREAT or (hasattr(os, "O_TMPFILE") and flags & os.O_TMPFILE == os.O_TMPFILE)
        if creates and os.path.realpath(os.path.join(folder, path) if "dir_fd" in kwargs else path).startswith(folder):
            refused(path)
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if os.path.realpath(path).startswith(folder):
            refused(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)


@pytest.mark.parametrize("to, name", [("safetensors", "back"), ("gguf", "back.gguf")])
def test_export_into_a_read_only_folder_fails_before_the_work(to, name, container, gguf_container, tmp_path,
                                                             monkeypatch):
    source = container if to == "safetensors" else gguf_container
    decoded = []
    original = zipmoe.Container.read_into
    monkeypatch.setattr(zipmoe.Container, "read_into", lambda *a, **k: decoded.append(1) or original(*a, **k))
    (tmp_path / "ro").mkdir()
    _read_only(monkeypatch, tmp_path / "ro")
    with pytest.raises(zipmoe.IoError, match="Read-only file system"):
        zipmoe.export(source, to, tmp_path / "ro" / name)
    assert decoded == [] and entries(tmp_path / "ro") == []


def test_export_into_a_read_only_folder_is_one_line_from_the_cli(container, tmp_path):
    if os.geteuid() == 0:
        target = "/proc/zipmoe-export-test"  # procfs refuses new entries even to root
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        target = tmp_path / "ro" / "back"
    run = run_cli("export", container, "--to", "safetensors", target, "-q")
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("zipmoe: error: ") and len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.stderr

