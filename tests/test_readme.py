"""What the README tells someone adopting the library, checked against the code it describes: the
first command's cost (the paper's settings it runs, the arithmetic of the measurement, a
measuring command that parses), the GPU install line, the citation, and that every flag it
names exists. The README's code blocks run in the tests of what they use (test_api,
test_loading, test_user_method)."""
import re

import pytest

import aalp_tf
from aalp_tf import paper
from aalp_tf.config import DataConfig
from tests.helpers.readme import README

MNIST_TRAIN_SPLIT = 60_000


def section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    return text[start:text.index("\n## ", start + len(heading) + 2)]


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, " ".join(text.split()))  # as read, whatever the wrapping
    assert found, f"the README no longer says {pattern!r}"
    return float(found[1])


def test_the_first_commands_cost_is_the_papers_run_measured():
    text = section("## Two commands on a fresh machine")
    mnist = paper.paper_settings("mnist")
    assert number(r"the paper's MNIST run: (\d+) epochs", text) == mnist["epochs"]
    assert number(r"with a PGD-(\d+) adversary", text) == mnist["attack_steps"]
    assert number(r"per step of (\d+) images", text) == mnist["batch_size"]
    steps = number(r"with (\d+) steps an epoch", text)
    assert steps == (MNIST_TRAIN_SPLIT - DataConfig(dataset="mnist").val_examples) / \
        mnist["batch_size"]
    per_step = number(r"about ([\d.]+) CPU-seconds per step", text)
    per_epoch = number(r"about (\d+) CPU-minutes per epoch", text)
    per_run = number(r"about (\d+) CPU-hours for the run", text)
    assert per_epoch == pytest.approx(per_step * steps / 60, rel=0.05)
    assert per_run == pytest.approx(per_step * steps * mnist["epochs"] / 3600, rel=0.05)
    assert 'pip install "tensorflow[and-cuda]" && pip install -e .' in text


def test_the_measuring_command_is_a_train_command_of_today():
    from aalp_tf.cli import FLAGS, configs, runner

    text = " ".join(section("## Two commands on a fresh machine").split())
    line = re.search(r"`/usr/bin/time (python -m aalp_tf\.train [^`]+)`", text)[1]
    argv = line.split()[3:]
    try:
        runner.parse_flags(["train", *argv], command="train")
        cfg = configs.config_from_flags()
    finally:
        FLAGS.unparse_flags()
    assert (cfg.data.dataset, cfg.method.name, cfg.train.epochs) == ("mnist", "aalp", 1)
    assert (cfg.attack.steps, cfg.data.batch_size) == (40, 50)  # the paper's step, measured


def bibtex_entries(text: str) -> dict:
    """key -> (type, {field: value}) of every entry of the README's bibtex blocks."""
    entries = {}
    for block in re.findall(r"```bibtex\n(.*?)```", text, re.S):
        assert block.count("{") == block.count("}"), block
        for kind, key, body in re.findall(r"@(\w+)\{([\w:-]+),\n(.*?)\n\}", block, re.S):
            fields = dict(re.findall(r"^\s*(\w+)\s*=\s*\{(.*)\},?$", body, re.M))
            assert len(fields) == body.count("\n") + 1, body  # every line is one field
            entries[key] = (kind, fields)
    return entries


def test_the_citation_is_bibtex_for_the_paper_and_this_version_of_the_library():
    entries = bibtex_entries(section("## Citation"))
    kind, fields = entries["wu2020aalp"]
    assert kind == "article" and fields["title"] == "Adaptive Adversarial Logits Pairing"
    assert fields["journal"] == "arXiv preprint arXiv:2005.11904" and fields["year"] == "2020"
    kind, fields = entries["aalp_tf"]
    assert kind == "software" and fields["version"] == aalp_tf.__version__
    assert fields["license"] == "MIT"  # tests/test_package.py: LICENSE and setup.py say MIT
    # A figure called AutoAttack cites the attack and its parts (issue 19).
    assert {"croce2020autoattack", "croce2020fab", "andriushchenko2020square"} <= set(entries)


# Flags the README gives to other programs: TF Serving's server, docker, TensorBoard, Slurm,
# pip, absl's own, and the benchmark scripts' --quick.
OTHER_PROGRAMS = {"port", "rest_api_port", "model_base_path", "model_config_file",
                  "enable_batching", "batching_parameters_file", "rm", "logdir", "array", "wrap",
                  "no", "flagfile", "help", "helpfull", "quick"}


def test_every_flag_the_readme_names_is_a_flag_of_a_command():
    from aalp_tf import analyze, compare, evaluate, export, train, tune  # noqa: F401 their flags
    from aalp_tf.cli import FLAGS
    named = set(re.findall(r"(?<![\w-])--([a-z][a-z0-9_]*)", README.read_text()))
    unknown = {name for name in named - OTHER_PROGRAMS
               if name not in FLAGS and not (name.startswith("no") and name[2:] in FLAGS)}
    assert not unknown, f"the README names flags no command has: {sorted(unknown)}"
