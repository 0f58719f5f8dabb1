"""How every `python -m aalp_tf.X` command starts and fails.

Parsing, in order: --help (the command's own flags); absl parses the command line (and any
--flagfile); flags of other commands are refused; the modules of --imports register the user's
methods and backbones; registry-backed flags are checked against the registries; the paper's
settings for --dataset fill in every flag the user did not set. Bad input anywhere is one line
and exit status 2.
"""
import functools
import importlib
import os
import re
import sys
import textwrap
from typing import List

from absl import app, flags, logging

from aalp_tf import paper
from aalp_tf.cli.table import FLAGS, HELP_GROUPS, Shown, commands_of, every_flag, flags_of
from aalp_tf.errors import UsageError

HELP_ARGS = ("--help", "-h", "-?", "--helpshort")
_PLACEHOLDERS = {"int": "N", "float": "NUMBER", "fraction": "NUMBER", "string": "TEXT"}
# What compare says for the flags it sets itself, per cell.
_WHY_NOT = {"compare": "each cell sets its own method, seed and folders: --methods, --seeds, "
                       "--runs_dir; the evaluation's seed is --eval_seed"}


def registered_names(flag: str) -> List[str]:
    """The names a registry-backed flag accepts (the registry's, and e.g. auto)."""
    module, attribute, also = Shown.registries[flag]
    return [*also, *getattr(importlib.import_module(module), attribute).names()]


def _number(value) -> str:
    """%.6g, or 8/255 for a float with no short decimal that is a whole number of 1/255."""
    if not isinstance(value, float):
        return str(value)
    decimal, steps = f"{value:.6g}", value * 255
    if len(decimal) > 6 and abs(steps - round(steps)) < 1e-9 and round(steps) >= 1:
        return f"{round(steps)}/255"
    return decimal


def _paper_values(name: str) -> str:
    """`cifar10 8/255, mnist 0.3, svhn 12/255`: the flag's value in the paper's settings."""
    values = {d: paper.paper_settings(d).get(name) for d in sorted(paper.PAPER_SETTINGS)}
    return ", ".join(f"{d} {_number(v)}" for d, v in values.items() if v is not None)


def _usage(command: str, flag) -> str:
    """`--name=PLACEHOLDER (default: D)`, or `--[no]name (default: true)` for a boolean."""
    if flag.boolean:
        usage = f"--[no]{flag.name}"
        default = "true" if flag.default else "false"
    else:
        values = getattr(flag.parser, "enum_values", None)
        shape = "|".join(values) if values else _PLACEHOLDERS.get(flag.flag_type(), "A,B,...")
        usage = f"--{flag.name}={shape}"
        default = (flag.default_as_str or "none").strip("'") or "''"
    default = Shown.defaults.get((command, flag.name), default)
    if _paper_values(flag.name):
        default = f"the paper's for --dataset, else {default}"
    aliases = "".join(f"; alias --{a}" for a in Shown.aliases.get(flag.name, ()))
    return f"{usage} (default: {default}{aliases})"


def help_text(command: str, doc: str) -> str:
    """The command's docstring, then its own flags by group, each with its default."""
    lines = [(doc or "").strip(), ""]
    shown = Shown.groups.get(command, {})
    for group in [g for g in HELP_GROUPS if g in shown]:
        lines.append(f"{group}:")
        for name in shown[group]:
            lines.append(f"  {_usage(command, FLAGS[name])}")
            # absl starts an enum's help with its values, which the usage line already shows.
            text = re.sub(r"^<[^>]*>: ", "", Shown.helps.get((command, name), FLAGS[name].help))
            if name in Shown.registries:
                text += f" Accepted: {', '.join(registered_names(name))}."
            if _paper_values(name):
                text += f" The paper's: {_paper_values(name)}."
            lines += textwrap.wrap(text, width=96, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6)
        lines.append("")
    lines.append("Flags may also come from a file: --flagfile=FILE. TensorFlow's and absl's own "
                 "flags: --helpfull.")
    return "\n".join(lines)


def refuse_other_commands_flags(command: str) -> None:
    """One line naming every flag given that belongs only to other commands."""
    own = flags_of(command)
    given = sorted(name for name in every_flag() if name not in own and FLAGS[name].present)
    if not given:
        return
    why = f" ({_WHY_NOT[command]})" if command in _WHY_NOT else ""
    received = ", ".join(f"{FLAGS[name].serialize()} ({', '.join(commands_of(name))})"
                         for name in given)
    raise UsageError(f"flags of other commands do not apply to {command}{why}; received: "
                     f"{received}; accepted: the flags `python -m aalp_tf.{command} --help` "
                     "lists")


def import_modules(names) -> None:
    """--imports: the user's modules, imported before any registry is read."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # a user's module can fail in any way: one line, not a trace
            kind = type(err).__name__
            raise UsageError(f"--imports: module {name!r} could not be imported ({kind}: "
                             f"{err}); accepted: importable module names, e.g. "
                             "my_project.methods") from None


def check_registered(command: str) -> None:
    """Every registry-backed flag of the command names a registered thing (or e.g. auto)."""
    for name in [n for n in Shown.registries if n in flags_of(command)]:
        value, (module, attribute, also) = FLAGS[name].value, Shown.registries[name]
        if value is not None and value not in also:
            getattr(importlib.import_module(module), attribute).get(value)


def apply_paper_settings(command: str) -> None:
    """The paper's settings for --dataset, for every flag of the command the user did not set
    (on the command line or in a --flagfile)."""
    own = flags_of(command)
    norm = FLAGS["norm"].value if "norm" in own else "linf"
    for name, value in paper.paper_settings(FLAGS["dataset"].value or "", norm).items():
        if name in own and not FLAGS[name].present:
            FLAGS[name].value = value


def parse_flags(argv: List[str], *, command: str, doc: str = "") -> List[str]:
    """absl flags_parser: the steps of this module's docstring."""
    if any(arg in HELP_ARGS for arg in argv[1:]):
        try:
            print(help_text(command, doc), flush=True)
        except BrokenPipeError:  # `--help | head` closed the pipe: nothing is wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    try:
        rest = FLAGS(argv)
        refuse_other_commands_flags(command)
        if "imports" in flags_of(command):
            import_modules(FLAGS.imports)
        check_registered(command)
        apply_paper_settings(command)
    except (flags.Error, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return rest


def run(main, command: str) -> None:
    """absl's app.run with our flag parser; UsageError and Ctrl-C end in one line, no traceback.

    Args:
      main: the command's main(argv).
      command: its name (train, evaluate, ...): the flags it reads, in cli.table.
    """

    def guarded(argv):
        if logging.get_verbosity() == logging.INFO:  # absl's default: TF's savers chatter at INFO
            logging.set_verbosity(logging.WARNING)
        try:
            main(argv)
        except UsageError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: the run folder keeps every completed epoch; run the same "
                  "command again to resume", file=sys.stderr)
            sys.exit(130)

    doc = sys.modules[main.__module__].__doc__
    app.run(guarded, flags_parser=functools.partial(parse_flags, command=command, doc=doc))


def reject_positional(argv) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}; every option is a --flag "
                         "(see --help)")
