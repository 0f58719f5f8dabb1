"""Commands run as a user runs them, started together and collected by name."""
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 180


class Subprocesses:
    """`python ARGS` processes started at once: TF's start-up dominates each, so they overlap it.
    Every process is ended within TIMEOUT seconds of being collected, or at close()."""

    def __init__(self):
        self.procs, self.results = {}, {}

    def start(self, name, args):
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
        self.procs[name] = subprocess.Popen([sys.executable, *args], env=env, cwd=REPO,
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
