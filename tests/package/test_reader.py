"""load_service_definition: valid packages extract; hostile ones are refused before anything is written."""

from __future__ import annotations

import json
import os
import struct
import sys
import zipfile
from pathlib import Path

import pytest

from fpgaserve.package import (
    DEFAULT_LIMITS,
    PackageError,
    PackageLimits,
    load_service_definition,
    verify_package,
)
from tests.package.hostile import (
    PROGRAM,
    manifest_for,
    package,
    patch_central_directory,
    sha,
    symlink_entry,
    valid_members,
    write_zip,
)


def refused(zip_path: Path, dest: Path, match: str, limits: PackageLimits = DEFAULT_LIMITS) -> None:
    """The package is refused with ``match`` in the message, and nothing lands in ``dest``."""
    with pytest.raises(PackageError, match=match):
        load_service_definition(zip_path, dest=dest, limits=limits)
    assert not dest.exists() or list(dest.iterdir()) == []


def test_valid_package_extracts_with_its_manifest(tmp_path: Path) -> None:
    definition = load_service_definition(package(tmp_path / "p.zip"), dest=tmp_path / "out")
    assert definition.manifest.name == "tiny"
    assert [s.kind for s in definition.manifest.pipeline] == ["tensorflow", "fpga", "keras"]
    assert definition.member_path("stages/01-fpga/program.fpga").read_bytes() == PROGRAM
    assert definition.labels() == ["cat", "dog"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["labels.txt", "manifest.json", "stages"]
    assert verify_package(tmp_path / "p.zip") == definition.manifest


def test_extracted_directory_is_verified_in_place(tmp_path: Path) -> None:
    load_service_definition(package(tmp_path / "p.zip"), dest=tmp_path / "out")
    again = load_service_definition(tmp_path / "out")
    assert again.root == tmp_path / "out"
    (tmp_path / "out" / "labels.txt").write_bytes(b"cat\nmouse\n")
    with pytest.raises(PackageError, match=r"labels.txt.*(size|sha256)"):
        load_service_definition(tmp_path / "out")


def test_extracted_directory_with_a_symlink_is_refused(tmp_path: Path) -> None:
    load_service_definition(package(tmp_path / "p.zip"), dest=tmp_path / "out")
    program = tmp_path / "out" / "stages" / "01-fpga" / "program.fpga"
    (tmp_path / "elsewhere.fpga").write_bytes(program.read_bytes())
    program.unlink()
    program.symlink_to(tmp_path / "elsewhere.fpga")
    with pytest.raises(PackageError, match="symbolic link"):
        load_service_definition(tmp_path / "out")


def test_without_dest_extracts_into_a_new_directory(tmp_path: Path) -> None:
    definition = load_service_definition(package(tmp_path / "p.zip"))
    try:
        assert (definition.root / "manifest.json").is_file()
    finally:
        import shutil

        shutil.rmtree(definition.root)


def test_bad_digest(tmp_path: Path) -> None:
    members = valid_members()
    manifest = manifest_for(members)
    members["labels.txt"] = b"cat\ndoG\n"  # same size, other bytes
    refused(
        package(tmp_path / "p.zip", members=members, manifest=manifest),
        tmp_path / "out",
        "labels.txt.*bad digest",
    )


def test_size_that_disagrees_with_the_manifest(tmp_path: Path) -> None:
    members = valid_members()
    manifest = manifest_for(members)
    members["labels.txt"] = b"cat\ndog\nmouse\n"
    refused(
        package(tmp_path / "p.zip", members=members, manifest=manifest), tmp_path / "out", "labels.txt.*size"
    )


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil.txt", "path traversal"),
        ("stages/../../evil.txt", "path traversal"),
        ("/etc/cron.d/evil", "absolute path"),
        ("C:/Windows/evil.dll", "absolute path"),
        ("stages\\..\\evil.txt", "backslash"),
        ("stages//evil.txt", "empty or '.' path component"),
        ("stages/./evil.txt", "empty or '.' path component"),
    ],
)
def test_unsafe_member_names(tmp_path: Path, name: str, problem: str) -> None:
    refused(package(tmp_path / "p.zip", extra=[(name, b"x")]), tmp_path / "out", problem)


def test_symlink_member(tmp_path: Path) -> None:
    zip_path = package(tmp_path / "p.zip", extra=[symlink_entry("stages/link", "/etc/passwd")])
    refused(zip_path, tmp_path / "out", "symbolic link")


def test_special_file_member(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("stages/fifo")
    info.create_system = 3
    info.external_attr = (0o010000 | 0o644) << 16  # S_IFIFO
    refused(package(tmp_path / "p.zip", extra=[(info, b"")]), tmp_path / "out", "not a regular file")


def test_duplicate_names(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        zip_path = package(tmp_path / "p.zip", extra=[("labels.txt", b"cat\ndog\n")])
    refused(zip_path, tmp_path / "out", "labels.txt.*duplicate name")


def test_names_that_collide_on_case_insensitive_disks(tmp_path: Path) -> None:
    refused(package(tmp_path / "p.zip", extra=[("LABELS.txt", b"x")]), tmp_path / "out", "duplicate name")


def test_oversize_member(tmp_path: Path) -> None:
    members = {**valid_members(), "stages/01-fpga/program.fpga": bytes(range(256)) * 20}
    limits = PackageLimits(max_member_bytes=4096)
    refused(package(tmp_path / "p.zip", members=members), tmp_path / "out", "program.fpga.*oversize", limits)


def test_zip_bomb_by_compression_ratio(tmp_path: Path) -> None:
    zeros = bytes(4 << 20)  # deflates about 1000:1
    members = {**valid_members(), "stages/02-classifier/variables/variables.data-00000-of-00001": zeros}
    refused(
        package(tmp_path / "p.zip", members=members), tmp_path / "out", r"compression ratio \d+:1.*zip bomb"
    )


def test_zip_bomb_by_total_size(tmp_path: Path) -> None:
    limits = PackageLimits(max_total_bytes=300)
    refused(package(tmp_path / "p.zip"), tmp_path / "out", "expands to more than 300 bytes", limits)


def test_too_many_members(tmp_path: Path) -> None:
    refused(
        package(tmp_path / "p.zip"),
        tmp_path / "out",
        "more than the limit of 3",
        PackageLimits(max_members=3),
    )


def test_overlapping_entries(tmp_path: Path) -> None:
    zip_path = package(tmp_path / "p.zip")
    # Point the second entry's central record at the first entry's local header ("better" zip bombs).
    patch_central_directory(zip_path, entry=1, offset=42, value=struct.pack("<I", 0))
    refused(zip_path, tmp_path / "out", "overlap")


def test_encrypted_member(tmp_path: Path) -> None:
    zip_path = package(tmp_path / "p.zip")
    patch_central_directory(zip_path, entry=2, offset=8, value=struct.pack("<H", 1))
    refused(zip_path, tmp_path / "out", "encrypted")


def test_unknown_format_version(tmp_path: Path) -> None:
    manifest = manifest_for(valid_members(), formatVersion=2, pipeline="whatever a future version holds")
    refused(
        package(tmp_path / "p.zip", manifest=manifest), tmp_path / "out", "formatVersion 2 is not supported"
    )


def test_inconsistent_stage_shapes(tmp_path: Path) -> None:
    manifest = manifest_for(valid_members())
    manifest["pipeline"][1]["output"]["shape"] = [16, 2]
    refused(
        package(tmp_path / "p.zip", manifest=manifest),
        tmp_path / "out",
        r"'fpga' outputs float32\[16, 2\].*'classifier' takes float32\[\?\]",
    )


def test_member_not_listed_in_the_manifest(tmp_path: Path) -> None:
    refused(package(tmp_path / "p.zip", extra=[("stages/extra.bin", b"x")]), tmp_path / "out", "not listed")


def test_listed_member_missing_from_the_zip(tmp_path: Path) -> None:
    zip_path = package(tmp_path / "p.zip", skip=("labels.txt",))
    refused(zip_path, tmp_path / "out", "labels.txt.*missing from the package")


def test_not_a_zip_and_no_manifest(tmp_path: Path) -> None:
    (tmp_path / "p.zip").write_bytes(b"hello")
    refused(tmp_path / "p.zip", tmp_path / "out", "not a zip file")
    refused(write_zip(tmp_path / "q.zip", [("labels.txt", b"x")]), tmp_path / "out", "no manifest.json")


def test_invalid_manifest_json(tmp_path: Path) -> None:
    zip_path = write_zip(tmp_path / "p.zip", [("manifest.json", b"{not json")])
    refused(zip_path, tmp_path / "out", "not valid JSON")


def test_program_digest_must_match_its_member(tmp_path: Path) -> None:
    manifest = manifest_for(valid_members())
    manifest["pipeline"][1]["programSha256"] = sha(b"another program")
    refused(package(tmp_path / "p.zip", manifest=manifest), tmp_path / "out", "programSha256 does not match")


def test_existing_files_in_dest_are_never_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "labels.txt").write_text("mine")
    with pytest.raises(PackageError, match="already exists"):
        load_service_definition(package(tmp_path / "p.zip"), dest=dest)
    assert sorted(p.name for p in dest.iterdir()) == ["labels.txt"]  # no staging left behind
    assert (dest / "labels.txt").read_text() == "mine"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="cannot read the package"):
        load_service_definition(tmp_path / "missing.zip", dest=tmp_path / "out")


def test_manifest_written_by_the_reader_is_the_packaged_one(tmp_path: Path) -> None:
    definition = load_service_definition(package(tmp_path / "p.zip"), dest=tmp_path / "out")
    on_disk = json.loads((definition.root / "manifest.json").read_text())
    assert on_disk["formatVersion"] == 1
    assert os.stat(definition.root / "manifest.json").st_size > 0


def test_directory_entries_of_a_rezipped_package_are_accepted(tmp_path: Path) -> None:
    zip_path = package(tmp_path / "p.zip", extra=[("stages/", b""), ("stages/01-fpga/", b"")])
    definition = load_service_definition(zip_path, dest=tmp_path / "out")
    assert definition.member_path("stages/01-fpga/program.fpga").read_bytes() == PROGRAM
