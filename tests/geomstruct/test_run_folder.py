"""The run-folder format's owner (geomstruct/run_folder.py, docs/run-folder.md): writing and reading round trip,
folders written before the schema version load, newer or corrupt ones are refused naming the file, and no other
module of the project spells the folder's file names or the protocol list."""

from __future__ import annotations

import ast
import errno
import json
import os
from pathlib import Path

import pytest

from geomstruct import run_folder as rf

ROOT = Path(__file__).resolve().parents[2]

FILE_NAMES = (
    rf.CONFIG_FILE,
    rf.ENVIRONMENT_FILE,
    rf.METRICS_FILE,
    rf.TRAJECTORY_FILE,
    rf.FEATURES_FILE,
    rf.SNAPSHOT_FILE,
    rf.CHECKPOINT_FILE,
    rf.TIMING_FILE,
    rf.ERROR_FILE,
    rf.PREDICTORS_FILE,
)


def _finished(folder: Path, metrics: dict, config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / rf.CONFIG_FILE).write_text(json.dumps(config))
    (folder / rf.METRICS_FILE).write_text(json.dumps(metrics))
    return folder


def test_written_metrics_and_config_read_back_with_the_schema_version(tmp_path):
    run = tmp_path / "suite" / "a-s0"
    rf.write_config(run, {"loss": "contrastive", "steps": 8})
    assert not rf.is_finished(run)
    rf.write_metrics(run, {"loss": "contrastive", "seed": 0, "geometry": {"U": 1.5}})
    assert rf.is_finished(run)
    stored = json.loads((run / rf.METRICS_FILE).read_text())
    assert stored[rf.SCHEMA_FIELD] == rf.SCHEMA_VERSION  # stamped by the writer
    assert json.loads((run / rf.CONFIG_FILE).read_text()) == {"loss": "contrastive", "steps": 8}  # no version there
    record = rf.read_record(run, defaults={"steps": 1, "lr": 0.1})
    assert record.name == "a-s0" and record.schema_version == rf.SCHEMA_VERSION
    assert record.metrics == {"loss": "contrastive", "seed": 0, "geometry": {"U": 1.5}}  # the field left out
    assert record.config == {"loss": "contrastive", "steps": 8, "lr": 0.1}  # defaults fill what it lacks
    assert list(rf.finished_runs(tmp_path / "suite")) == ["a-s0"]
    assert not list(run.glob(rf.TEMPORARY_PATTERN))  # the atomic writer left no temporary
    with pytest.raises(ValueError, match=rf.SCHEMA_FIELD):
        rf.write_metrics(run, {rf.SCHEMA_FIELD: 7})  # the version is the owner's to write


def test_a_folder_written_before_the_schema_version_reads_as_version_1(tmp_path):
    run = _finished(tmp_path / "old", {"loss": "similarity", "seed": 1}, {"steps": 800})
    record = rf.read_record(run)
    assert record.schema_version == 1 and record.metrics == {"loss": "similarity", "seed": 1}
    assert rf.read_config(tmp_path / "nowhere") is None
    assert rf.read_record(_finished(tmp_path / "no-config", {"seed": 2})).config is None


def test_a_newer_schema_version_is_refused_naming_the_file(tmp_path):
    run = _finished(tmp_path / "new", {"seed": 0, rf.SCHEMA_FIELD: rf.SCHEMA_VERSION + 1})
    newer = rf"new/metrics\.json: written in run-folder schema version {rf.SCHEMA_VERSION + 1}, newer than this code"
    with pytest.raises(ValueError, match=newer) as err:
        rf.read_record(run)
    assert "unreadable run" in str(err.value)
    with pytest.raises(ValueError, match=r"new/metrics\.json: written in run-folder schema version"):
        rf.read_metrics(run)
    (run / rf.METRICS_FILE).write_text(json.dumps({rf.SCHEMA_FIELD: "1"}))
    with pytest.raises(ValueError, match=r"new/metrics\.json: schema_version '1' is not a positive integer"):
        rf.read_metrics(run)


def test_a_corrupt_metrics_file_is_refused_naming_it(tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    (run / rf.METRICS_FILE).write_text('{"seed": ')
    with pytest.raises(ValueError, match=r"broken: unreadable run \(.*broken/metrics\.json: not valid JSON"):
        rf.read_record(run)
    (run / rf.METRICS_FILE).write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"broken/metrics\.json: not UTF-8 text"):
        rf.read_metrics(run)
    (run / rf.METRICS_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"broken/metrics\.json: expected a JSON object"):
        rf.read_metrics(run)
    with pytest.raises(ValueError, match=r"elsewhere: not a finished run \(no metrics\.json\)"):
        rf.read_record(tmp_path / "elsewhere")


def test_the_report_skips_a_newer_folder_naming_its_file(tmp_path):
    from geomstruct.runs import load_runs

    _finished(tmp_path / "suite" / "new-s0", {"seed": 0, rf.SCHEMA_FIELD: 99}, {"loss": "x"})
    runs, problems = load_runs([tmp_path])
    assert runs == []
    assert any("new-s0/metrics.json: written in run-folder schema version 99" in p for p in problems), problems


def test_the_lock_and_the_folders_found(tmp_path):
    assert rf.lock_path(tmp_path / "out" / "run-a") == tmp_path / "out" / f".run-a{rf.LOCK_SUFFIX}"
    a = _finished(tmp_path / "x" / "a", {"seed": 0})
    b = tmp_path / "x" / "deep" / "b"
    rf.write_config(b, {})
    os.symlink(tmp_path / "x", tmp_path / "link")
    assert rf.run_folders([tmp_path / "x", tmp_path / "link", tmp_path / "x" / "deep"]) == [a, b]  # each once


def test_the_atomic_writer_names_the_file_on_failure(tmp_path, monkeypatch):
    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"cannot write .*run/metrics\.json: No space left on device") as raised:
        rf.write_metrics(tmp_path / "run", {})
    assert raised.value.errno == errno.ENOSPC
    assert list((tmp_path / "run").iterdir()) == []  # no temporary, no partial file


# --- one owner -----------------------------------------------------------------------------------------------------


def _docstrings(tree: ast.AST) -> set[int]:
    """``id`` of every docstring node (module, class, function), and of the string that documents a constant."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for i, stmt in enumerate(body):
            is_string = isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            if is_string and isinstance(stmt.value.value, str):
                first = i == 0 and isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                after_assignment = i > 0 and isinstance(body[i - 1], (ast.Assign, ast.AnnAssign))
                if first or after_assignment:
                    found.add(id(stmt.value))
    return found


def spelled(root: Path = ROOT, owner: str = "geomstruct/run_folder.py") -> list[str]:
    """``file:line: literal`` for every string in the code of ``bench``, ``geomstruct`` and ``models`` (docstrings
    aside) that spells a run-folder file name, the lock suffix or a protocol tuple, outside the owner module."""
    out = []
    for package in ("bench", "geomstruct", "models"):
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if relative == owner:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            skip = _docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                    hits = [name for name in FILE_NAMES if name in node.value]
                    if node.value == rf.LOCK_SUFFIX:
                        hits.append(rf.LOCK_SUFFIX)
                    out += [f"{relative}:{node.lineno}: {hit!r}" for hit in hits]
                if isinstance(node, ast.Tuple) and len(node.elts) >= 3:
                    values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                    if len(values) == len(node.elts) and set(rf.LABEL_PROTOCOLS) <= set(values):
                        out.append(f"{relative}:{node.lineno}: the protocol list {tuple(values)}")
    return sorted(out, key=lambda line: (line.split(":")[0], int(line.split(":")[1])))


def test_no_module_but_the_owner_spells_the_run_folder_format():
    found = spelled()
    assert not found, "spell these through geomstruct.run_folder:\n" + "\n".join(found)


def test_the_spelling_check_sees_literals_in_code_and_fstrings(tmp_path):
    module = tmp_path / "bench" / "m.py"
    module.parent.mkdir()
    module.write_text(
        '"""Writes ``metrics.json`` (a docstring: prose)."""\n'
        'NAME = "config.json"\n'
        '"""The configuration (documents NAME)."""\n'
        "def f(p):\n"
        '    """Reads ``trajectory.csv``."""\n'
        '    raise ValueError(f"{p}/checkpoint.pt is stale")\n'
        'P = ("zero_shot", "linear_probe", "few_shot")\n'
        'L = ".lock"\n'
    )
    (tmp_path / "geomstruct").mkdir()
    (tmp_path / "models").mkdir()
    assert spelled(tmp_path) == [
        "bench/m.py:2: 'config.json'",
        "bench/m.py:6: 'checkpoint.pt'",
        "bench/m.py:7: the protocol list ('zero_shot', 'linear_probe', 'few_shot')",
        "bench/m.py:8: '.lock'",
    ]
