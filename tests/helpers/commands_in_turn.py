"""Runs several `python -m aalp_tf.COMMAND ARGS` one after the other in this one process, each as
its `__main__` runs it (cli.run), for tests of commands refused before they work: TensorFlow's
import, most of such a process' seconds, is then paid once, not per command.

    python -m tests.helpers.commands_in_turn  <  JSON [{"name", "argv": [COMMAND, ARGS...],
                                                      "cwd"}, ...]
    ->  last line: JSON {name: [exit status, stdout, stderr], ...}

Each command's stdout and stderr are file descriptors 1 and 2 while it runs (C++ and Python
alike), its flags are parsed from the defaults (as in a fresh process), in its own `cwd`.
"""
import importlib
import json
import os
import sys
import tempfile


def run_one(command: str, args: list, cwd: str):
    from aalp_tf import cli
    from aalp_tf.cli import FLAGS

    main = importlib.import_module(f"aalp_tf.{command}").main
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    captured = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    previous, argv = os.getcwd(), sys.argv
    code = 0
    try:
        os.chdir(cwd)
        sys.argv = [f"aalp_tf.{command}", *args]
        sys.stdout.flush(), sys.stderr.flush()
        for fd, file in captured.items():
            os.dup2(file.fileno(), fd)
        try:
            cli.run(main, command)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.chdir(previous)
        sys.argv = argv
        FLAGS.unparse_flags()  # the next command starts from the defaults
    texts = []
    for file in captured.values():
        file.seek(0)
        texts.append(file.read().decode())
        file.close()
    return [code, *texts]


def main():
    cases = json.loads(sys.stdin.read())
    results = {case["name"]: run_one(case["argv"][0], case["argv"][1:], case["cwd"])
               for case in cases}
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
