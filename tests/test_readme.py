"""Every Python block of README.md runs as it stands (issue 11, item 4), each in a fresh
namespace and an empty working folder; and the README's CLI help agrees with the commands."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    if "sklearn" in BLOCKS[index]:
        pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    code = compile(BLOCKS[index], f"README.md python block {index + 1}", "exec")
    exec(code, {"__name__": "__readme__"})  # noqa: S102 - the project's own README


def test_readme_mentions_every_option_of_the_commands_that_take_a_network():
    from nngp_lut.cli.main import cli

    text = README.read_text()
    for name in ("predict", "search", "kernel", "mc", "compare"):
        for param in cli.commands[name].params:
            for opt in param.opts:
                if opt.startswith("--") and opt not in ("--help", "--quiet", "--force"):
                    assert opt in text, f"{name} {opt} is not in the README"
