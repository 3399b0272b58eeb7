"""The repository stands on its own: its theory, run layout, license and citation are inside it,
and nothing in it points outside."""
from __future__ import annotations

import re
import subprocess

import yaml

from conftest import REPO

ARXIV_IDS = ["2411.07724", "2604.14587", "2310.05898", "2302.06675", "1912.02365", "1710.11606"]


def _tracked_text_files():
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        path = REPO / name
        if name.startswith("results/") or not path.is_file():  # results/ is regenerated, not edited
            continue
        try:
            yield name, path.read_text()
        except UnicodeDecodeError:
            continue


def test_nothing_refers_outside_the_repository():
    outside = re.compile(r"\.\./shared|/work/shared|RUN LAYOUT of the design")
    offenders = [f"{name}:{i}" for name, text in _tracked_text_files() if name != "tests/test_docs.py"
                 for i, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert offenders == []


def test_theory_has_the_ten_sections_in_order_and_every_citation_resolves():
    theory = (REPO / "docs" / "THEORY.md").read_text()
    assert [int(n) for n in re.findall(r"^## (\d+)\. ", theory, re.M)] == list(range(1, 11))
    for arxiv in ARXIV_IDS:
        assert arxiv in theory
    cited = {int(n) for _, text in _tracked_text_files() for n in re.findall(r"THEORY §(\d+)", text)}
    assert cited and cited <= set(range(1, 11))


def test_readme_links_into_the_repository_exist():
    readme = (REPO / "README.md").read_text()
    local = [t for t in re.findall(r"\]\(([^)#]+)\)", readme) if not t.startswith("http")]
    assert {"docs/THEORY.md", "docs/RUN_LAYOUT.md", "LICENSE", "CITATION.cff"} <= set(local)
    assert [t for t in local if not t.startswith("results/") and not (REPO / t).exists()] == []


def test_license_is_the_mit_license_pyproject_declares():
    assert 'license = "MIT"' in (REPO / "pyproject.toml").read_text()
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the lionconv authors" in text


def test_citation_is_cff_1_2_0_with_the_software_and_the_papers():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    for key in ("message", "title", "authors", "version", "license"):
        assert cff[key], key
    assert cff["license"] == "MIT"
    found = {ident["value"].removeprefix("arXiv:") for ref in cff["references"]
             for ident in ref["identifiers"]}
    assert found == set(ARXIV_IDS)
    for ref in cff["references"]:
        assert ref["type"] and ref["title"] and ref["authors"] and ref["year"]


def test_top_level_exports_are_the_public_pieces_and_import_lazily():
    import sys

    code = ("import sys, lionconv; assert 'torch' not in sys.modules, 'import lionconv pulled torch'\n"
            "from lionconv import Lion, CLion, SignSGD, gradient_metrics, bound_template\n"
            "import lionconv.optim, lionconv.metrics, lionconv.theory\n"
            "assert (Lion, CLion, SignSGD) == (lionconv.optim.Lion, lionconv.optim.CLion, lionconv.optim.SignSGD)\n"
            "assert gradient_metrics is lionconv.metrics.gradient_metrics\n"
            "assert bound_template is lionconv.theory.bound_template\n"
            "assert set(lionconv.__all__) >= {'Lion', 'CLion', 'SignSGD', 'gradient_metrics', 'bound_template'}\n"
            "try:\n    lionconv.nope\nexcept AttributeError as e:\n    assert 'nope' in str(e)\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
