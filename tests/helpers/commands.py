"""Commands run as a user runs them: one at a time, or started together and collected by name."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 180


class Subprocesses:
    """`python ARGS` processes started at once: TF's start-up dominates each, so they overlap it.
    Every process is ended within TIMEOUT seconds of being collected, or at close()."""

    def __init__(self):
        self.procs, self.results = {}, {}

    def start(self, name, args, *, cwd=REPO, prefix=(), env=None):
        """`prefix`: what runs python (e.g. without_root_powers()); `env`: the environment
        (default: this one, with TF's C++ logging off)."""
        env = env or dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.procs[name] = subprocess.Popen([*prefix, sys.executable, *args],
                                            env=dict(env, PYTHONPATH=str(REPO)), cwd=cwd,
                                            text=True, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE)

    def result(self, name):
        """(exit status, stdout, stderr) of the command `name`."""
        if name not in self.results:
            proc = self.procs[name]
            try:
                out, err = proc.communicate(timeout=TIMEOUT)
            finally:
                self._end(proc)
            self.results[name] = (proc.returncode, out, err)
        return self.results[name]

    def close(self):
        for proc in self.procs.values():
            self._end(proc)

    @staticmethod
    def _end(proc):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


class InOneProcess:
    """Subprocesses' start / result / close for `python -m aalp_tf.COMMAND` runs refused before
    they work: at the first result(), one process (tests/helpers/commands_in_turn.py, under the
    one `prefix` and `env` given) runs every command started, in turn, so that TensorFlow's
    import is paid once rather than per command. Each command's exit status, stdout and stderr
    (file descriptors 1 and 2) are its own."""

    def __init__(self):
        self.cases, self.results, self.setup = [], None, None

    def start(self, name, args, *, cwd=REPO, prefix=(), env=None):
        assert args[0] == "-m" and args[1].startswith("aalp_tf."), args
        assert self.setup in (None, (list(prefix), env)), "one process: one prefix and env"
        self.setup = (list(prefix), env)
        self.cases.append({"name": name, "argv": [args[1][len("aalp_tf."):], *args[2:]],
                           "cwd": str(cwd)})

    def result(self, name):
        """(exit status, stdout, stderr) of the command `name`."""
        if self.results is None:
            prefix, env = self.setup
            env = env or dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
            done = subprocess.run([*prefix, sys.executable, "-m",
                                   "tests.helpers.commands_in_turn"],
                                  input=json.dumps(self.cases), cwd=REPO,
                                  env=dict(env, PYTHONPATH=str(REPO)), text=True,
                                  capture_output=True, timeout=TIMEOUT)
            assert done.returncode == 0, done.stderr[-3000:]
            self.results = {name: tuple(result) for name, result in
                            json.loads(done.stdout.strip().splitlines()[-1]).items()}
        return self.results[name]

    def close(self):
        pass  # the process has ended (or been ended by its timeout) in result()


def command(module, *args, cwd, timeout=240, prefix=()):
    """`python -m aalp_tf.MODULE ARGS` in `cwd`: the CompletedProcess, output as text."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([*prefix, sys.executable, "-m", f"aalp_tf.{module}", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def without_root_powers():
    """The prefix that runs a command bound by file permissions: root writes into read-only
    folders, so as root it drops that capability (setpriv); None where that is impossible."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"] if setpriv else None


def assert_one_line_error(result, expected_start):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected_start), lines[0]
    assert "Traceback" not in result.stderr


def in_process(main, command: str, argv, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """`python -m aalp_tf.COMMAND ARGV` run by `main` in this process, for commands that train
    nothing (a subprocess would spend most of its time importing TensorFlow) or that must reach
    servers living in this process; the result of a subprocess run, output as text."""
    from aalp_tf import cli
    from aalp_tf.cli import FLAGS

    monkeypatch.setattr(sys, "argv", [command, *argv])
    capsys.readouterr()
    try:
        cli.run(main, command)
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        FLAGS.unparse_flags()  # the next command starts from the defaults
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([command, *argv], code, out, err)
