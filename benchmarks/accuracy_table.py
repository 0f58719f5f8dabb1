"""Prints a markdown table of accuracies from `evaluate` JSON files: one row per file.

usage: python -m benchmarks.accuracy_table bench_runs/mnist_quick/eval/*.json
"""
import json
import pathlib
import sys


def main(paths):
    records = [(pathlib.Path(p).stem, json.loads(pathlib.Path(p).read_text())) for p in paths]
    attacks = list(records[0][1]["accuracy"])
    print("| method | " + " | ".join(attacks) + " |")
    print("|---" * (len(attacks) + 1) + "|")
    for name, record in records:
        cells = [f"{100 * record['accuracy'][a]:.2f}%" if a in record["accuracy"] else "—"
                 for a in attacks]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
