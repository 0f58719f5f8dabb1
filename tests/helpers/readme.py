"""The README's code blocks, which tests run so that they cannot rot."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(heading: str) -> list:
    """The ```python blocks of the README section `heading` (up to the next heading)."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.index("\n#", start + len(heading) + 2)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def shrunk(code: str, replacements: dict) -> str:
    """`code` with each `old` replaced by `new`; each must occur exactly once."""
    for old, new in replacements.items():
        assert code.count(old) == 1, f"the README example no longer holds {old!r}"
        code = code.replace(old, new)
    return code
