"""Code packages: pack and unpack round trip, the tree manifest, and every refusal."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import os
import pickle
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.code import (
    TREE_FORMAT,
    FileRecord,
    check_file,
    check_path,
    pack,
    read_tree,
    rules,
    tree_manifest,
    unpack,
    verify_tree,
)
from bastion.errors import CodeRefused, IntegrityError, InvalidInput

PACKAGE = {
    "pyproject.toml": b'[project]\nname = "pkg"\nversion = "0.1"\n',
    "pkg/__init__.py": b'"""A user\'s package."""\n',
    "pkg/model.py": b"import torch\n\n\ndef build():\n    return torch.nn.Linear(4, 2)\n",
    "data.csv": b"x,y\n1,2\n3,4\n",
}


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def _zip(name: str = "evil.py", data: bytes = b"import os\n") -> bytes:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        archive.writestr(name, data)
    return stream.getvalue()


def _empty_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    return root


# --- round trip -----------------------------------------------------------------------------


def test_pack_then_unpack_gives_back_the_same_files_and_records(tmp_path: Path) -> None:
    source = _write(tmp_path / "source", PACKAGE)
    archive, records = pack(source)
    assert records == [
        FileRecord(path=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        for name, data in sorted(PACKAGE.items())
    ]
    into = _empty_folder(tmp_path / "into")
    assert unpack(archive, into) == records
    assert _files(into) == PACKAGE
    assert stat.S_IMODE((into / "pkg/model.py").stat().st_mode) == 0o600
    assert stat.S_IMODE((into / "pkg").stat().st_mode) == 0o700
    verify_tree(into, records)


def test_pack_gives_the_same_bytes_for_the_same_tree(tmp_path: Path) -> None:
    first, _ = pack(_write(tmp_path / "one", PACKAGE))
    # Another copy, written in another order, with other times and modes.
    other = _write(tmp_path / "two", dict(reversed(PACKAGE.items())))
    os.utime(other / "pkg/model.py", (1_000_000_000, 1_000_000_000))
    (other / "pkg/model.py").chmod(0o755)
    assert pack(other)[0] == first == pack(tmp_path / "one")[0]
    assert first[4:8] == b"\0\0\0\0"  # the gzip header's mtime
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        members = tar.getmembers()
    assert [member.name for member in members] == sorted(PACKAGE)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) for m in members} == {
        (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)
    }


def test_pack_leaves_out_caches_version_control_and_build_metadata(tmp_path: Path) -> None:
    source = _write(tmp_path / "source", PACKAGE)
    _write(
        source,
        {
            "pkg/__pycache__/model.cpython-311.pyc": b"\xa7\r\r\n bytecode",
            ".git/config": b"[core]\n",
            "foo.egg-info/PKG-INFO": b"Name: foo\n",
            "pkg/sub/.venv/lib/native.so": b"\x7fELF",
            "pkg/sub/mod.py": b"x = 1\n",
        },
    )
    _, records = pack(source)
    assert [record.path for record in records] == sorted([*PACKAGE, "pkg/sub/mod.py"])


def test_images_and_text_that_merely_look_like_magic_are_kept(tmp_path: Path) -> None:
    extra = {
        "assets/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
        "assets/logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>\n",
        "MZ.txt": b"MZ is where this note starts\n",
        "BZh.md": b"BZh91 is not a bzip2 stream\n",
        "empty.txt": b"",
    }
    _, records = pack(_write(tmp_path / "source", {**PACKAGE, **extra}))
    assert {record.path for record in records} == {*PACKAGE, *extra}


# --- the tree manifest ----------------------------------------------------------------------


def test_tree_manifest_is_canonical_and_reads_back(tmp_path: Path) -> None:
    _, records = pack(_write(tmp_path / "source", PACKAGE))
    body = tree_manifest(records)
    assert tree_manifest(list(reversed(records))) == body
    assert json.loads(body) == {"format": TREE_FORMAT, "files": [r.as_json() for r in records]}
    assert body == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    assert read_tree(body) == records


GOOD_ENTRY = {"path": "a.py", "sha256": "0" * 64, "size": 1}


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"\xff\xfe",
        json.dumps([GOOD_ENTRY]).encode(),
        json.dumps({"format": "bastion-code-tree/2", "files": [GOOD_ENTRY]}).encode(),
        json.dumps({"format": TREE_FORMAT, "files": [GOOD_ENTRY], "more": 1}).encode(),
        json.dumps({"format": TREE_FORMAT, "files": {"a.py": GOOD_ENTRY}}).encode(),
        json.dumps({"format": TREE_FORMAT, "files": [{**GOOD_ENTRY, "path": "../a.py"}]}).encode(),
        json.dumps({"format": TREE_FORMAT, "files": [{**GOOD_ENTRY, "path": 7}]}).encode(),
        json.dumps({"format": TREE_FORMAT, "files": [{**GOOD_ENTRY, "sha256": "A" * 64}]}).encode(),
        json.dumps({"format": TREE_FORMAT, "files": [{**GOOD_ENTRY, "size": -1}]}).encode(),
        json.dumps({"format": TREE_FORMAT, "files": [{**GOOD_ENTRY, "size": True}]}).encode(),
        json.dumps({"format": TREE_FORMAT, "files": [{**GOOD_ENTRY, "mode": 420}]}).encode(),
        json.dumps({"format": TREE_FORMAT, "files": [GOOD_ENTRY, GOOD_ENTRY]}).encode(),
        json.dumps(
            {"format": TREE_FORMAT, "files": [{**GOOD_ENTRY, "path": "b.py"}, GOOD_ENTRY]}
        ).encode(),
    ],
)
def test_read_tree_refuses_a_malformed_manifest(document: bytes) -> None:
    with pytest.raises(IntegrityError, match="code tree manifest"):
        read_tree(document)


def _change_a_byte(folder: Path) -> str:
    (folder / "pkg/model.py").write_bytes(PACKAGE["pkg/model.py"].replace(b"4", b"5"))
    return "pkg/model.py: changed"


def _add_a_file(folder: Path) -> str:
    (folder / "pkg/extra.py").write_bytes(b"import os\n")
    return "pkg/extra.py: an extra file"


def _remove_a_file(folder: Path) -> str:
    (folder / "data.csv").unlink()
    return "data.csv: missing"


def _swap_for_a_symlink(folder: Path) -> str:
    (folder / "data.csv").unlink()
    (folder / "data.csv").symlink_to("/etc/passwd")
    return "data.csv: a symlink"


def _link_a_folder(folder: Path) -> str:
    (folder / "more").symlink_to(folder / "pkg")
    return "more: a symlink"


@pytest.mark.parametrize(
    "tamper", [_change_a_byte, _add_a_file, _remove_a_file, _swap_for_a_symlink, _link_a_folder]
)
def test_verify_tree_names_the_first_file_that_differs(
    tmp_path: Path, tamper: Callable[[Path], str]
) -> None:
    archive, records = pack(_write(tmp_path / "source", PACKAGE))
    into = _empty_folder(tmp_path / "into")
    unpack(archive, into)
    expected = tamper(into)
    with pytest.raises(IntegrityError, match=expected):
        verify_tree(into, records)


def test_verify_tree_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="no such folder"):
        verify_tree(tmp_path / "gone", [])


# --- pack's refusals ------------------------------------------------------------------------


def _symlink_to_passwd(source: Path) -> str:
    (source / "pkg/passwd").symlink_to("/etc/passwd")
    return "pkg/passwd: symlinks are not allowed: copy the file in"


def _symlinked_folder(source: Path) -> str:
    elsewhere = _write(source.parent / "elsewhere", {"util.py": b"x = 1\n"})
    (source / "pkg/util").symlink_to(elsewhere)
    return "pkg/util: symlinks are not allowed"


def _fifo(source: Path) -> str:
    os.mkfifo(source / "pkg/pipe")
    return "pkg/pipe: not a regular file or folder"


def _writer(relative: str, data: bytes, expected: str) -> Callable[[Path], str]:
    def write(source: Path) -> str:
        _write(source, {relative: data})
        return expected

    write.__name__ = relative.replace("/", "_")
    return write


PICKLE = pickle.dumps({"a": 1})
PE = b"MZ" + b"\0" * 0x3A + (0x40).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 32

REFUSED_BY_PACK = [
    _symlink_to_passwd,
    _symlinked_folder,
    _fifo,
    _writer("pkg/fast.so", b"not really a library\n", r"pkg/fast.so: native code \(.so\)"),
    _writer("pkg/Fast.PYD", b"text\n", r"pkg/Fast.PYD: native code \(.pyd\)"),
    _writer("pkg/helper.py", b"\x7fELF\x02\x01\x01\0" + b"\0" * 56, "helper.py: native code"),
    _writer("pkg/tool.txt", PE, "pkg/tool.txt: native code"),
    _writer("pkg/lib.txt", b"\xcf\xfa\xed\xfe\x07\0\0\x01", "pkg/lib.txt: native code"),
    _writer("pkg/module.txt", b"\0asm\x01\0\0\0", "pkg/module.txt: native code"),
    _writer("pkg/model.pyc", b"print('hi')\n", r"pkg/model.pyc: Python bytecode"),
    _writer("table.dat", PICKLE, "table.dat: a pickle"),
    _writer("logo.png", PICKLE, "logo.png: a pickle"),
    _writer("weights.pt", b"tensor\n", r"weights.pt: serialized weights .*\(.pt\)"),
    _writer("model.safetensors", b"{}\n", r"model.safetensors: serialized weights"),
    _writer("lib.zip", _zip(), r"lib.zip: a nested archive \(.zip\)"),
    _writer("data.txt", _zip(), r"data.txt: a nested archive \(by its contents\)"),
    _writer("notes.txt", b"hello\n" + _zip(), r"notes.txt: a nested archive \(by its contents\)"),
    _writer("notes.md", gzip.compress(b"x"), r"notes.md: a nested archive \(by its contents\)"),
    _writer("notes.rst", bz2.compress(b"x"), r"notes.rst: a nested archive \(by its contents\)"),
    _writer("blob.dat", bytes(range(256)), "blob.dat: a binary file"),
    _writer("a\\b.py", b"x = 1\n", "a backslash"),
]


@pytest.mark.parametrize("make", REFUSED_BY_PACK, ids=lambda make: make.__name__)
def test_pack_refuses_naming_the_file(tmp_path: Path, make: Callable[[Path], str]) -> None:
    source = _write(tmp_path / "source", PACKAGE)
    expected = make(source)
    with pytest.raises(CodeRefused, match=expected):
        pack(source)


def test_pack_refuses_a_package_without_python(tmp_path: Path) -> None:
    source = _write(tmp_path / "source", {"README.md": b"# notes\n", "data.csv": b"x\n"})
    with pytest.raises(CodeRefused, match=r"no \.py file"):
        pack(source)


def test_pack_refuses_a_missing_folder_or_a_file(tmp_path: Path) -> None:
    with pytest.raises(CodeRefused, match="no such folder"):
        pack(tmp_path / "gone")
    (tmp_path / "file.py").write_bytes(b"x = 1\n")
    with pytest.raises(CodeRefused, match="no such folder"):
        pack(tmp_path / "file.py")


def test_pack_refuses_too_many_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _write(tmp_path / "source", PACKAGE)
    monkeypatch.setattr(rules, "MAX_FILES", len(PACKAGE))
    pack(source)
    monkeypatch.setattr(rules, "MAX_FILES", len(PACKAGE) - 1)
    with pytest.raises(CodeRefused, match="more than 3 files"):
        pack(source)


def test_pack_refuses_a_file_over_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _write(tmp_path / "source", {**PACKAGE, "data.csv": b"x" * 101})
    monkeypatch.setattr(rules, "MAX_FILE_BYTES", 101)
    pack(source)
    monkeypatch.setattr(rules, "MAX_FILE_BYTES", 100)
    with pytest.raises(CodeRefused, match=r"data\.csv: 101 bytes, above the 100-byte limit"):
        pack(source)


def test_pack_refuses_a_package_over_the_total_or_archive_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _write(tmp_path / "source", PACKAGE)
    total = sum(len(data) for data in PACKAGE.values())
    monkeypatch.setattr(rules, "MAX_TOTAL_BYTES", total - 1)
    with pytest.raises(CodeRefused, match=f"more than {total - 1} bytes"):
        pack(source)
    monkeypatch.setattr(rules, "MAX_TOTAL_BYTES", total)
    monkeypatch.setattr(rules, "MAX_ARCHIVE_BYTES", 100)
    with pytest.raises(CodeRefused, match="above the 100-byte limit"):
        pack(source)


# --- unpack's refusals ----------------------------------------------------------------------

Member = tuple[tarfile.TarInfo | str, bytes]
GOOD_NAME = "pkg/__init__.py"
GOOD: Member = (GOOD_NAME, b"x = 1\n")


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _tar_gz(*members: Member) -> bytes:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            info = _member(member) if isinstance(member, str) else member
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return gzip.compress(stream.getvalue())


REFUSED_BY_UNPACK: dict[str, tuple[tuple[Member, ...], str]] = {
    "parent": ((GOOD, ("../evil.py", b"x = 1\n")), "'../evil.py'"),
    "parent folder": ((GOOD, (_member("../up", tarfile.DIRTYPE), b"")), "'../up'"),
    "absolute": ((GOOD, ("/tmp/evil.py", b"x = 1\n")), "'/tmp/evil.py': an absolute path"),
    "symlink": ((GOOD, (_member("pkg/p.py", tarfile.SYMTYPE, "/etc/passwd"), b"")), "a symlink"),
    "hardlink": ((GOOD, (_member("pkg/h.py", tarfile.LNKTYPE, GOOD_NAME), b"")), "a hard link"),
    "fifo": ((GOOD, (_member("pkg/fifo", tarfile.FIFOTYPE), b"")), "a named pipe"),
    "device": ((GOOD, (_member("pkg/tty", tarfile.CHRTYPE), b"")), "a device"),
    "sparse": ((GOOD, (_member("pkg/s.py", tarfile.CONTTYPE), b"x = 1\n")), "tar type"),
    "duplicate": ((GOOD, GOOD), "'pkg/__init__.py': twice"),
    "file then folder": ((GOOD, ("a", b"x\n"), ("a/b.py", b"x = 1\n")), "'a/b.py': twice, or"),
    "folder then file": ((GOOD, ("a/b.py", b"x = 1\n"), ("a", b"x\n")), "'a': twice, or"),
    "pickle": ((GOOD, ("pkg/table.dat", PICKLE)), "pkg/table.dat: a pickle"),
    "native": ((GOOD, ("pkg/helper.py", b"\x7fELF\x02\x01\x01\0")), "helper.py: native code"),
    "no python": ((("README.md", b"# notes\n"),), r"no \.py file"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_BY_UNPACK))
def test_unpack_refuses_a_hostile_archive_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    members, expected = REFUSED_BY_UNPACK[case]
    into = _empty_folder(tmp_path / "sub" / "into")
    with pytest.raises(CodeRefused, match=expected):
        unpack(_tar_gz(*members), into)
    assert into.is_dir() and list(into.iterdir()) == []
    assert not (tmp_path / "sub" / "evil.py").exists()


def test_unpack_accepts_folder_members_and_skips_them(tmp_path: Path) -> None:
    into = _empty_folder(tmp_path / "into")
    records = unpack(_tar_gz((_member("pkg", tarfile.DIRTYPE), b""), GOOD), into)
    assert [record.path for record in records] == [GOOD_NAME]
    assert _files(into) == dict([GOOD])


def test_unpack_refuses_a_gzip_bomb_quickly_without_writing(tmp_path: Path) -> None:
    size = 200 << 20
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    header = _member("pkg/zeros.py")
    header.size = size
    parts = [deflate.compress(header.tobuf(tarfile.PAX_FORMAT))]
    chunk = bytes(8 << 20)
    parts += [deflate.compress(chunk) for _ in range(size // len(chunk))]
    bomb = b"".join([*parts, deflate.flush()])
    assert len(bomb) < rules.MAX_ARCHIVE_BYTES
    into = _empty_folder(tmp_path / "into")
    started = time.monotonic()
    with pytest.raises(CodeRefused, match="unpacks to more than"):
        unpack(bomb, into)
    assert time.monotonic() - started < 5
    assert list(into.iterdir()) == []


def test_unpack_counts_the_limits_on_what_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    into = _empty_folder(tmp_path / "into")
    two = _tar_gz(GOOD, ("pkg/b.py", b"y = 22\n"))
    monkeypatch.setattr(rules, "MAX_FILES", 1)
    with pytest.raises(CodeRefused, match="more than 1 files"):
        unpack(two, into)
    monkeypatch.setattr(rules, "MAX_FILES", 10)
    monkeypatch.setattr(rules, "MAX_FILE_BYTES", 6)
    with pytest.raises(CodeRefused, match=r"pkg/b\.py: 7 bytes, above the 6-byte limit"):
        unpack(two, into)
    monkeypatch.setattr(rules, "MAX_FILE_BYTES", 100)
    monkeypatch.setattr(rules, "MAX_TOTAL_BYTES", 12)
    with pytest.raises(CodeRefused, match="more than 12 bytes"):
        unpack(two, into)
    monkeypatch.setattr(rules, "MAX_TOTAL_BYTES", 100)
    monkeypatch.setattr(rules, "MAX_ARCHIVE_BYTES", len(two) - 1)
    with pytest.raises(CodeRefused, match=f"the archive is {len(two)} bytes"):
        unpack(two, into)
    assert list(into.iterdir()) == []
    monkeypatch.setattr(rules, "MAX_ARCHIVE_BYTES", len(two))
    assert len(unpack(two, into)) == 2


def _short_member() -> bytes:
    info = _member("pkg/a.py")
    info.size = 100
    return info.tobuf() + b"short"


def _valid_archive() -> bytes:
    return _tar_gz(GOOD)


@pytest.mark.parametrize(
    "archive",
    [
        b"",
        b"not a gzip stream",
        _valid_archive()[:-12],
        _valid_archive() + b"trailing",
        gzip.compress(b"not a tar stream " * 100),
        gzip.compress(_short_member()),
    ],
    ids=["empty", "garbage", "truncated", "trailing", "not tar", "short member"],
)
def test_unpack_refuses_a_corrupt_archive(tmp_path: Path, archive: bytes) -> None:
    into = _empty_folder(tmp_path / "into")
    with pytest.raises(IntegrityError, match=r"not a readable tar\.gz"):
        unpack(archive, into)
    assert list(into.iterdir()) == []


def test_unpack_only_into_an_existing_empty_folder(tmp_path: Path) -> None:
    archive = _valid_archive()
    with pytest.raises(InvalidInput, match="not an existing empty folder"):
        unpack(archive, tmp_path / "missing")
    busy = _write(tmp_path / "busy", {"keep.txt": b"mine\n"})
    with pytest.raises(InvalidInput, match="not an existing empty folder"):
        unpack(archive, busy)
    assert _files(busy) == {"keep.txt": b"mine\n"}


# --- paths and files ------------------------------------------------------------------------

GOOD_PATHS = [
    "a.py",
    "pkg/sub/mod.py",
    ".hidden",
    "-dash.py",
    "data file.csv",
    "é/ünï.py",
    "a" * 255,
    "/".join(["d"] * 15 + ["f.py"]),
]
BAD_PATHS = {
    "": "an empty path",
    "/abs.py": "an absolute path",
    "a\\b.py": "a backslash",
    "a/../b.py": "'..' path component",
    "..": "'..' path component",
    ".": "'..' path component",
    "./a.py": "'..' path component",
    "a//b.py": "an empty",
    "a/": "an empty",
    "a\x00b.py": "a control character",
    "a\nb.py": "a control character",
    "a\x7f.py": "a control character",
    "\udcff.py": "not valid UTF-8",
    "a" * 256: "longer than 255 bytes",
    "é" * 128: "longer than 255 bytes",
    "/".join(["d"] * 16 + ["f.py"]): "more than 16 folders deep",
}


@pytest.mark.parametrize("relative", GOOD_PATHS)
def test_check_path_accepts_plain_relative_paths(relative: str) -> None:
    check_path(relative)


@pytest.mark.parametrize("relative", sorted(BAD_PATHS))
def test_check_path_refuses_what_could_escape_or_mislead(relative: str) -> None:
    with pytest.raises(CodeRefused, match=BAD_PATHS[relative]) as refused:
        check_path(relative)
    assert str(refused.value).startswith(repr(relative))
    assert any(advice in str(refused.value) for advice in ("rename it", "shorten", "flatten"))


def test_check_file_refuses_with_a_reason_and_what_to_do() -> None:
    with pytest.raises(CodeRefused) as refused:
        check_file("pkg/table.dat", PICKLE)
    assert str(refused.value) == (
        "pkg/table.dat: a pickle, which can run code when loaded; "
        "store data as CSV or JSON, or weights as a signed model version"
    )
    assert refused.value.problem_type == "urn:bastion:error:code-refused"
    assert isinstance(refused.value, InvalidInput) and refused.value.exit_code == 2
