"""The docs point at code that exists: every file they link to, every function, class or test they name.

Conventions the docs follow, and what is checked for each (by parsing the Python files with ast, not by
searching their text):

- a link to a repository file, ``[text](../minigpt_rlhf/ppo.py)``: the file exists; with ``#anchor``, a markdown
  file has a heading with that anchor (GitHub's rule: lower case, punctuation dropped, spaces to hyphens);
- a link whose text is one name in backticks, ``[`gae`](../minigpt_rlhf/ppo.py)``: the file defines it
  (a function, class or module-level assignment; ``Class.method`` for a method; ``train_rm.main`` may repeat
  the module's name; ``generate(...)`` may show a call);
- ``path.py::name`` in backticks, ``tests/test_ppo_math.py::test_gae_matches_reference_loop``: the same;
- a test named alone in backticks, ``test_...``: some file under tests/ defines it;
- a repository path written anywhere, ``bench/bench_ppo.py`` in a command: the file exists.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "bench").glob("*.md"))]

LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
QUALIFIED = re.compile(r"^([\w./-]+\.py)::?([A-Za-z_][\w.]*)$")
REPO_PATH = re.compile(r"(?<![\w/.-])((?:minigpt_rlhf|tests|bench|docs)/[\w/.-]*\w\.(?:py|md|sh|png))")
DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


@lru_cache(maxsize=None)
def definitions(path: Path) -> frozenset[str]:
    """Names a Python file defines: top-level functions, classes and assignments, and `Class.member`."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.add(f"{node.name}.{sub.name}")
                    elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                        names.add(f"{node.name}.{sub.target.id}")
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    """The anchors GitHub gives the headings of a markdown file."""
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        fenced ^= line.startswith("```")
        if not fenced and (m := re.match(r"#{1,6}\s+(.*)", line)):
            found.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return frozenset(found)


@lru_cache(maxsize=None)
def all_tests() -> frozenset[str]:
    return frozenset(n for p in (ROOT / "tests").glob("test_*.py") for n in definitions(p) if n.startswith("test_"))


def check_name(path: Path, name: str) -> str | None:
    """None if the Python file `path` defines `name`, else what is wrong."""
    name = name.split("(")[0].strip()
    if path.is_dir():
        path = path / "__init__.py"
    if path.suffix != ".py":
        return f"`{name}` names a definition but links to {path.name}, not a Python file"
    if not DOTTED.match(name):
        return f"`{name}` is not a name (write the function's own name)"
    if name.startswith(path.stem + "."):
        name = name[len(path.stem) + 1:]
    if name not in definitions(path):
        return f"{path.relative_to(ROOT)} defines no `{name}`"
    return None


def problems(text: str, doc: Path) -> list[str]:
    """Every reference in the markdown `text` (of file `doc`) that does not resolve, as 'doc:line: problem'."""
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc}:{lineno}"
        for label, target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                found.append(f"{where}: link to a missing file {target}")
                continue
            if anchor and path.suffix == ".md" and anchor not in anchors(path):
                found.append(f"{where}: {path.name} has no heading #{anchor}")
            span = re.fullmatch(r"`([^`]+)`", label.strip())
            if span and not re.search(r"[/\\]|\.(?:py|md|sh|jsonl|txt|png)$", span.group(1)):
                if (err := check_name(path, span.group(1))) is not None:
                    found.append(f"{where}: {err}")
        for code in CODE_SPAN.findall(line):
            code = code.strip()
            if m := QUALIFIED.match(code):
                path = ROOT / m.group(1)
                err = check_name(path, m.group(2)) if path.exists() else f"missing file {m.group(1)}"
                if err is not None:
                    found.append(f"{where}: {err}")
            elif re.fullmatch(r"test_\w+", code) and code not in all_tests():
                found.append(f"{where}: no test under tests/ is named `{code}`")
        for rel in REPO_PATH.findall(line):
            if not (ROOT / rel).exists():
                found.append(f"{where}: names a missing file {rel}")
    return found


def test_every_file_function_and_test_the_docs_name_exists():
    found = [p for doc in DOCS for p in problems(doc.read_text(encoding="utf-8"), doc)]
    assert not found, "\n".join(found)


def test_the_tutorial_links_to_code_and_to_tests():
    text = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    named = [label for label, target in LINK.findall(text) if target.endswith(".py")]
    assert sum("test_" in label for label in named) >= 50
    assert sum("test_" not in label for label in named) >= 50


def test_the_checker_reports_wrong_names_and_files():
    doc = ROOT / "docs" / "tutorial.md"
    good = ("[`gae`](../minigpt_rlhf/ppo.py) [`Block.forward`](../minigpt_rlhf/model.py) "
            "`tests/test_ppo_math.py::test_gae_hand_worked_three_tokens` `bench/bench_ppo.py` "
            "[x](../README.md#quickstart) [y](#4-ppo)")
    assert problems(good, doc) == []
    bad = ("[`gae_wrong`](../minigpt_rlhf/ppo.py) [`Block.backward`](../minigpt_rlhf/model.py) "
           "[x](../minigpt_rlhf/nothing.py) `tests/test_ppo_math.py::test_nothing` `test_nothing_either` "
           "`bench/nothing.py` [y](../README.md#no-such-heading)")
    assert len(problems(bad, doc)) == 7
