"""The README and docs/ as tests, as transformers' doc tests do: their marked code blocks run, their links resolve.

The convention (docs/architecture.md, "Code blocks in the docs"): a ```python block directly preceded by the line
`<!-- runnable -->` is executed; one preceded by `<!-- not-runnable: REASON -->` (it needs the Hub, a server, a GPU
or a trained model) is only compiled. Every python block carries one of the two, so none is skipped by oversight.
The runnable blocks of one file run in order in one namespace (a later block may use an earlier one's names), in a
fresh temporary working directory, offline, with tiny models the blocks build themselves. Shell blocks are not run,
but their `hf-swin-ddpm` and training-script command lines must parse with the real argument parsers."""

from __future__ import annotations

import importlib
import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = "<!-- runnable -->"
NOT_RUNNABLE = re.compile(r"<!-- not-runnable: \S.* -->")
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`\n]*)$")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?: \"[^\"]*\")?\)")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    marker: str  # the line before the fence
    code: str


def code_blocks(page: Path) -> list[Block]:
    """Every fenced block of a Markdown page, with the line just before its opening fence."""
    blocks, lines, index = [], page.read_text(encoding="utf-8").splitlines(), 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent = len(opening["indent"])
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(line[indent:] for line in lines[index + 1 : end])
        marker = lines[index - 1].strip() if index else ""
        blocks.append(Block(page, index + 1, opening["info"].strip().split(" ")[0], marker, body + "\n"))
        index = end + 1
    return blocks


def test_the_pages_exist():
    names = {page.name for page in PAGES}
    assert {"README.md", "segmentation.md", "diffusion.md", "evaluation.md", "training.md", "hub.md"} <= names
    assert {"space.md", "benchmarks.md", "architecture.md"} <= names


def test_readme_is_a_manual():
    """At most ~300 lines, and one runnable example per model."""
    readme = ROOT / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 300
    runnable = "\n".join(block.code for block in code_blocks(readme) if block.marker == RUNNABLE)
    assert "SwinFPNForSegmentation" in runnable and "DDPMPaperPipeline" in runnable


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_python_block_is_marked_and_compiles(page):
    """A python block is either run by this suite or says why it is not; either way it is valid Python."""
    python_blocks = [block for block in code_blocks(page) if block.language == "python"]
    unmarked = [
        f"{page.name}:{block.line}"
        for block in python_blocks
        if block.marker != RUNNABLE and not NOT_RUNNABLE.fullmatch(block.marker)
    ]
    assert not unmarked, f"python blocks without {RUNNABLE} or <!-- not-runnable: REASON -->: {unmarked}"
    for block in python_blocks:
        compile(block.code, f"{page.name}:{block.line}", "exec")


def runnable_pages() -> list[Path]:
    return [page for page in PAGES if any(block.marker == RUNNABLE for block in code_blocks(page))]


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda page: page.name)
def test_runnable_blocks_run(page, tmp_path, monkeypatch):
    """The page's runnable blocks, in order, in one namespace, in an empty working directory, offline."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import: set it here too
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    try:
        for block in code_blocks(page):
            if block.marker != RUNNABLE:
                continue
            assert block.language == "python", f"{page.name}:{block.line}: only python blocks can be runnable"
            torch.manual_seed(0)
            try:
                exec(compile(block.code, f"{page.name}:{block.line}", "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"the block at {page.name}:{block.line} failed: {error!r}") from error
    finally:
        torch.set_num_threads(threads)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = "".join(char for char in text if char in " -" or unicodedata.category(char)[0] in "LN")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    inside_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            inside_fence = not inside_fence
        elif not inside_fence and (heading := re.match(r"#{1,6} (.+)", line)):
            anchor, suffix = github_anchor(heading[1]), 0
            while (anchor if not suffix else f"{anchor}-{suffix}") in found:
                suffix += 1
            found.add(anchor if not suffix else f"{anchor}-{suffix}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page):
    """Every relative link (and image) names an existing file, and its #anchor a heading of that page."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^ *```.*?^ *```", "", text, flags=re.DOTALL | re.MULTILINE)  # links inside code are code
    broken = []
    for match in LINK.finditer(text):
        target = match["target"]
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: {broken}"


def test_files_named_in_the_docs_exist():
    """Paths of this repository written in backticks (`hf_swin_ddpm/...`, `spaces_app/...`) name files that exist."""
    folders = "hf_swin_ddpm|spaces_app|benchmarks|tests|docs|model_cards"
    missing = []
    for page in PAGES:
        for name in re.findall(rf"`((?:{folders})/[\w./-]*)`", page.read_text(encoding="utf-8")):
            if not name.endswith("...") and not (ROOT / name).exists():
                missing.append(f"{page.name}: {name}")
    assert not missing, missing


TRAINING_SCRIPTS = {
    "train-ddpm": "hf_swin_ddpm.training.train_ddpm",
    "train-seg": "hf_swin_ddpm.training.train_segmentation",
}
SCRIPT_CALL = re.compile(r"-m (hf_swin_ddpm\.training\.train_\w+) ")


def command_lines(page: Path) -> list[tuple[str, str]]:
    """(where, command) for each `hf-swin-ddpm ...` or `... -m hf_swin_ddpm.training.train_* ...` line of the page's
    shell blocks and inline code with flags, continuation lines joined; lines with a placeholder for the flags
    (`...`, `[flags]`), a shell variable or `--help` are sketches."""
    found = []
    for block in code_blocks(page):
        if block.language in ("bash", "sh", "shell"):
            for number, line in enumerate(block.code.replace("\\\n", " ").splitlines()):
                found.append((f"{page.name}:{block.line} (line {number + 1})", line.strip()))
    text = re.sub(r"^ *```.*?^ *```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    found += [(f"{page.name} (inline)", span) for span in re.findall(r"`(hf-swin-ddpm [^`]*--[^`]+)`", text)]
    return [
        (where, line)
        for where, line in found
        if (line.startswith("hf-swin-ddpm ") or SCRIPT_CALL.search(line))
        and not any(sketch in line for sketch in ("...", "[flags]", "$", "--help"))
    ]


def parser_and_arguments(command: str):
    """The argparse parser that reads `command` and the arguments it is given."""
    tokens = shlex.split(command, comments=True)
    if tokens[0] == "hf-swin-ddpm" and tokens[1] in TRAINING_SCRIPTS:
        return importlib.import_module(TRAINING_SCRIPTS[tokens[1]]).build_parser(), tokens[2:]
    if tokens[0] == "hf-swin-ddpm":
        return importlib.import_module("hf_swin_ddpm.cli").build_parser(), tokens[1:]
    module = next(token for token in tokens if token.startswith("hf_swin_ddpm.training."))
    return importlib.import_module(module).build_parser(), tokens[tokens.index(module) + 1 :]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_command_lines_parse(page, capsys):
    """The shell examples use flags that exist: each command line parses with its command's own parser."""
    failed = []
    for where, command in command_lines(page):
        parser, arguments = parser_and_arguments(command)
        try:
            parser.parse_args(arguments)
        except SystemExit:
            failed.append(f"{where}: {command}\n    {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not failed, "\n".join(failed)
