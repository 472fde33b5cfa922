"""Listing a source (jobs/scan/listing.py): storage options, filters, symlinks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from jobs.scan.listing import storage_options_for

from scan_fixtures import ERRORS, GOOD, media, object_name


def test_storage_options_take_the_endpoint_from_flag_or_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    assert storage_options_for("/local/path") == {}
    options = storage_options_for("s3://bucket/prefix")
    assert options["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:1"}
    assert (options["key"], options["secret"]) == ("a", "b")
    assert storage_options_for("s3://b", endpoint_url="http://x:2")["client_kwargs"]["endpoint_url"] == "http://x:2"
    assert storage_options_for("s3://b", anon=True)["anon"] is True


def test_listing_filters_by_extension_glob_and_count(tmp_path, samples_dir):
    from jobs.scan.listing import list_objects

    for key, data in media(samples_dir).items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
    entries = list_objects(str(tmp_path), {})
    assert sorted(object_name(e["uri"]) for e in entries) == sorted(list(GOOD) + list(ERRORS))
    assert all(e["fingerprint"].startswith("size:") and os.path.isabs(e["uri"]) for e in entries)
    assert [object_name(e["uri"]) for e in list_objects(str(tmp_path), {}, include=("good/*",), exclude=("*.jpg",))] == \
        ["astronaut_zoom.mp4", "pair_pan.mp4"]
    assert len(list_objects(str(tmp_path / "good" / "coffee.jpg"), {})) == 1
    # the scheme's case does not matter (URIs are normalised once, before fsspec)
    assert [e["uri"] for e in list_objects(f"FILE://{tmp_path}", {})] == [e["uri"] for e in entries]
    # symlinks are followed (a folder of links to videos elsewhere is scanned); dangling ones are skipped
    links = tmp_path / "links"
    links.mkdir()
    (links / "clip.mp4").symlink_to(tmp_path / "good" / "pair_pan.mp4")
    (links / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (linked,) = list_objects(str(links), {})
    assert object_name(linked["uri"]) == "clip.mp4" and linked["size"] == (tmp_path / "good" / "pair_pan.mp4").stat().st_size


def test_a_missing_s3_prefix_is_source_not_found_and_an_empty_one_is_not(s3_server, s3_bucket):
    """A mistyped or removed prefix stops the scan (exit 2) instead of succeeding every night with nothing."""
    import boto3
    import pytest

    from jobs.scan.errors import SourceNotFoundError
    from jobs.scan.listing import list_objects

    client = boto3.client("s3", endpoint_url=s3_server["endpoint_url"])
    client.put_object(Bucket=s3_bucket, Key="uploads/notes.txt", Body=b"not media")
    client.put_object(Bucket=s3_bucket, Key="empty/", Body=b"")  # a folder marker, as consoles create them
    options = storage_options_for(f"s3://{s3_bucket}")
    for missing in (f"s3://{s3_bucket}/uplaods", f"s3://{s3_bucket}/uploads/notes", f"s3://{s3_bucket}-gone/uploads"):
        with pytest.raises(SourceNotFoundError, match="source not found"):
            list_objects(missing, options)
    assert list_objects(f"s3://{s3_bucket}/empty", options) == []    # exists, empty: a quiet night
    assert list_objects(f"s3://{s3_bucket}/uploads", options) == []  # exists, no media
    assert list_objects(f"s3://{s3_bucket}", options) == []


def test_gcs_fingerprints_ignore_metadata_only_updates():
    """A GCS ETag changes when only an object's metadata does; its generation (or MD5) changes with the content."""
    from jobs.scan.listing import object_entry

    info = {"name": "b/a.mp4", "size": 10, "etag": "CJf3k8mLq4EDEAE=", "generation": "1700000000000001",
            "metageneration": "1", "md5Hash": "rL0Y20zC+Fzt72VPzMSk2A==", "updated": "2026-11-27T02:00:00Z"}
    entry = object_entry("gs://b/a.mp4", info)
    relabelled = object_entry("gs://b/a.mp4", {**info, "etag": "CJf3k8mLq4EDEAI=", "metageneration": "2",
                                               "updated": "2026-11-28T09:00:00Z"})
    assert entry["fingerprint"] == relabelled["fingerprint"] == "generation:1700000000000001"
    assert object_entry("gs://b/a.mp4", {**info, "generation": "1700000000000002"})["fingerprint"] != entry["fingerprint"]
    without = {k: v for k, v in info.items() if k != "generation"}
    assert object_entry("gs://b/a.mp4", without)["fingerprint"] == "md5:rL0Y20zC+Fzt72VPzMSk2A=="
    assert object_entry("s3://b/a.mp4", {"ETag": '"abc"', "size": 10})["fingerprint"] == "etag:abc"  # S3 unchanged


def test_a_folder_of_symlinks_lists_the_files_they_point_to(tmp_path, samples_dir):
    """fsspec lists local links as type "other"; a folder of links to media must still be scanned."""
    from jobs.scan.listing import list_objects

    (tmp_path / "media").mkdir()
    target = samples_dir / "astronaut.jpg"
    (tmp_path / "media" / "a.jpg").symlink_to(target)
    (tmp_path / "media" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")  # dangling: skipped
    entries = list_objects(str(tmp_path / "media"), {})
    assert [Path(e["uri"]).name for e in entries] == ["a.jpg"]
    assert entries[0]["size"] == target.stat().st_size and entries[0]["mtime"] == pytest.approx(target.stat().st_mtime)
    assert list_objects(str(tmp_path / "media" / "a.jpg"), {})[0]["size"] == target.stat().st_size  # one linked file


def test_folders_reached_through_symlinks_are_walked_once_and_loops_end(tmp_path, samples_dir):
    """A link to a folder is walked as the folder (it was skipped: its media never scanned), outside the source
    too, under the link's path; each real folder once, its own path first: links back to the source, to its parent,
    to itself or to a folder already walked add nothing and do not recurse."""
    from jobs.scan.listing import list_objects

    source, elsewhere = tmp_path / "media", tmp_path / "elsewhere"
    (source / "sub").mkdir(parents=True)
    (elsewhere / "deeper").mkdir(parents=True)
    shutil.copy(samples_dir / "astronaut.jpg", source / "sub" / "a.jpg")
    shutil.copy(samples_dir / "coffee.jpg", elsewhere / "c.jpg")
    shutil.copy(samples_dir / "coffee.jpg", elsewhere / "deeper" / "d.jpg")
    (source / "archive").symlink_to(elsewhere)  # outside the source: walked, nested folders too
    (source / "again").symlink_to(source / "sub")  # a folder already walked under its own path
    (source / "sub" / "up").symlink_to(tmp_path)  # the source's parent: holds the source itself and `elsewhere`
    (source / "sub" / "self").symlink_to(source / "sub" / "self")  # loops on itself
    (elsewhere / "back").symlink_to(source)  # from outside back into the source
    listed = [e["uri"][len(str(source)) + 1:] for e in list_objects(str(source), {})]
    assert listed == ["archive/c.jpg", "archive/deeper/d.jpg", "sub/a.jpg"]


def test_docs_list_the_default_extensions_the_scan_keeps():
    """docs/scan.md's list of what a scan keeps by default is MEDIA_EXTENSIONS, no more and no less."""
    import re
    from pathlib import Path

    from pipeline.media import MEDIA_EXTENSIONS

    text = (Path(__file__).resolve().parents[3] / "docs" / "scan.md").read_text()
    listed = re.search(r"extension is a media type\n\(`([^`]+)`; `--ext` to change\)", text)
    assert listed, "docs/scan.md no longer lists the default extensions where this test looks"
    assert listed.group(1).split() == list(MEDIA_EXTENSIONS)
