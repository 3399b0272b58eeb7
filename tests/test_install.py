"""The package as a user installs it: a wheel in a fresh venv, the `lionconv` command from an
empty folder (configs and scripts come from inside the wheel, not from this checkout)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

TINY_SWEEP = ["problem.d=10", "steps=30", "seed=0,1", "progress=off", "sweep_name=tiny"]


def _copy_checkout(dest: Path) -> Path:
    """The files git would ship (tracked + untracked not ignored), without results/: the build
    writes build/ and *.egg-info next to its sources, so it never runs in the checkout itself."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        src = REPO / name
        if name.startswith("results/") or not src.is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)
    return dest


def _run(cmd, cwd, env, timeout=240) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _venv(venv: Path, env) -> Path:
    """A venv without pip that sees this environment's packages through a .pth file (a plain
    path line: the .pth files there, such as the editable lionconv of this environment, are not
    run), so nothing is downloaded and no second torch is installed."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent, env=env)
    site = Path(_run([str(venv / "bin" / "python"), "-c",
                      "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=venv.parent, env=env).stdout.strip())
    (site / "_outer_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _pip_install(venv: Path, env, *args: str) -> None:
    """This environment's pip, installing into `venv` (pip --python)."""
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
          "--no-deps", "-q", *args], cwd=venv.parent, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, env, wheel): the wheel built from a copy of this checkout, installed into a fresh venv."""
    root = tmp_path_factory.mktemp("install")
    source = _copy_checkout(root / "src")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # never import the checkout
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(root / "dist"), str(source)], cwd=root, env=env)
    wheel, = (root / "dist").glob("lionconv-*.whl")
    venv = _venv(root / "venv", env)
    _pip_install(venv, env, str(wheel))
    return venv, env, wheel


def test_wheel_ships_every_module_config_and_script(installed):
    _, _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(REPO)) for p in (REPO / "lionconv").rglob("*.py")}
    expected |= {"lionconv/conf/" + str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")}
    expected |= {"lionconv/scripts/" + p.name for p in (REPO / "scripts").glob("*.py")}
    assert expected - names == set()
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_installed_command_trains_a_sweep_and_analyses_it_from_an_empty_folder(installed, tmp_path):
    venv, env, _ = installed
    lionconv = str(venv / "bin" / "lionconv")
    where = _run([str(venv / "bin" / "python"), "-c", "import lionconv.resources as r; "
                  "print(r.__file__); print(r.config_dir())"], cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the wheel's copy, not the checkout's
    assert "train" in _run([lionconv, "--help"], cwd=tmp_path, env=env).stdout
    _run([lionconv, "train", "-m", *TINY_SWEEP, "out_dir=runs"], cwd=tmp_path, env=env)
    statuses = [json.loads(p.read_text())["status"] for p in (tmp_path / "runs" / "tiny").glob("*/summary.json")]
    assert statuses == ["finished", "finished"]
    _run([lionconv, "analyze", "runs/tiny", "--out", "report", "--n-boot", "20", "--no-figures", "--claims", "rate_in_K"],
         cwd=tmp_path, env=env)
    assert (tmp_path / "report" / "REPORT.md").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "runs"]  # nothing else written here


def test_installed_list_prints_presets_and_claims(installed, tmp_path):
    venv, env, _ = installed
    out = _run([str(venv / "bin" / "lionconv"), "list"], cwd=tmp_path, env=env).stdout
    assert "rate_in_K:" in out


def test_unknown_command_is_one_error_line(installed, tmp_path):
    venv, env, _ = installed
    proc = subprocess.run([str(venv / "bin" / "lionconv"), "trian"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lionconv: error: unknown command 'trian'; choose one of train, analyze, reproduce, list"]


def test_editable_install_reads_conf_and_scripts_from_the_checkout(tmp_path):
    """`pip install -e .` (the Makefile's flow): the command reads conf/ and scripts/ in place."""
    source = _copy_checkout(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    venv = _venv(tmp_path / "venv", env)
    _pip_install(venv, env, "--no-build-isolation", "-e", str(source))
    python = str(venv / "bin" / "python")
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([python, "-c", "import lionconv.resources as r; print(r.config_dir()); "
                  "print(r.script('reproduce'))"], cwd=work, env=env).stdout.split()
    assert where == [str(source / "conf"), str(source / "scripts" / "reproduce.py")]
    _run([str(venv / "bin" / "lionconv"), "train", "problem.d=10", "steps=10", "progress=off",
          "out_dir=runs"], cwd=work, env=env)
    assert len(list((work / "runs" / "default").glob("*/summary.json"))) == 1
