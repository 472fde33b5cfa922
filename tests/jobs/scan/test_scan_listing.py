"""Listing a source (jobs/scan/listing.py): storage options, filters, symlinks."""

from __future__ import annotations

import os

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
    assert len(list_objects(str(tmp_path), {}, max_objects=3)) == 3
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
