"""What a Python file defines: its public top-level classes and functions and their docstrings' first sentences.

Code questions ask for "the class described as <first sentence>", and the
sentence usually sits far below a file's first lines: a ``cat`` that shows only
the head gives the agent no evidence for or against the file it read
(``benchmarks/autoexplore_evidence.py`` counts how often). The outline is the
file as a reader skims it, definition by definition, so reading the right file
confirms it and reading a wrong one rules it out. The task generator derives
its code questions from the same definitions, so every question's sentence is
in its target's outline unless the outline is cut at the preview budget.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]`'\"])[.!?](?=\s|$)")
_ABBREVIATIONS = ("e.g", "i.e", "etc", "vs", "cf", "approx", "resp")
_BAD_SENTENCE = re.compile(r">>>|::|\b(?:TODO|XXX|FIXME)\b|^[^A-Za-z]|https?://|[{}<>|]")


def first_sentence(doc: str) -> str | None:
    """A docstring's first sentence, cleaned, or None when it is too short/long or not prose."""
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split()).replace("``", "`")
    end = next((m.start() for m in _SENTENCE_END.finditer(paragraph)
                if not paragraph[: m.start()].lower().endswith(_ABBREVIATIONS)), len(paragraph))
    sentence = paragraph[:end].strip().rstrip(".:;,")
    words = sentence.split()
    if not 3 <= len(words) <= 25 or _BAD_SENTENCE.search(sentence) or sentence.count("`") % 2:
        return None
    if words[0] in ("A", "An") or words[0][1:].islower():
        sentence = sentence[0].lower() + sentence[1:]
    return sentence.replace('"', "'")


@dataclass(frozen=True)
class Definition:
    """One public top-level definition (``kind`` is ``class``, ``function`` or ``module``) and its docstring's sentence."""

    kind: str
    name: str
    sentence: str | None


def code_definitions(text: str) -> list[Definition] | None:
    """Public classes, then public functions, in file order, then the module itself; None if ``text`` is not Python.

    Parsed with ``ast``, never imported or run. Text the parser cannot hold (a chain of 100,000
    ``a.`` or ``1+``, legal Python) overflows its stack: that file is not Python here either.
    """
    try:
        module = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    nodes = [n for n in module.body if isinstance(n, ast.ClassDef)] + [
        n for n in module.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    found = []
    for node in nodes:
        if node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        found.append(Definition("class" if isinstance(node, ast.ClassDef) else "function", node.name,
                                first_sentence(doc) if doc else None))
    doc = ast.get_docstring(module)
    found.append(Definition("module", "", first_sentence(doc) if doc else None))
    return found


def code_outline(text: str, max_chars: int) -> str | None:
    """The outline ``cat`` shows of a Python file within ``max_chars``; None when it is not Python or defines nothing.

    The module's sentence comes first (where it has one), then one line per definition (``class Name: sentence``),
    and a marker saying how many definitions did not fit.
    """
    definitions = code_definitions(text)
    if definitions is None:
        return None
    module, definitions = definitions[-1], definitions[:-1]
    if not definitions and module.sentence is None:
        return None
    lines = [f"module: {module.sentence}"] if module.sentence else []
    lines += [f"{'def' if d.kind == 'function' else d.kind} {d.name}" + (f": {d.sentence}" if d.sentence else "")
              for d in definitions]
    head = "Outline (public top-level definitions and their docstrings' first sentences):"
    kept: list[str] = []
    used = len(head)
    for line in lines:
        if used + 1 + len(line) > max_chars:
            break
        kept.append(line)
        used += 1 + len(line)
    left = len(lines) - len(kept)
    marker = [f"... [{left} more definition{'s' if left != 1 else ''}]"] if left else []
    return "\n".join([head, *kept, *marker])
