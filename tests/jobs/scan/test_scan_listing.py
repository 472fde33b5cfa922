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
    # an upper-case scheme is the same store (normalize_uri): it went to amazonaws.com with --endpoint-url ignored
    assert storage_options_for("S3://b", endpoint_url="http://x:2")["client_kwargs"]["endpoint_url"] == "http://x:2"


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


def test_a_name_that_is_not_utf8_is_left_out_and_counted_and_the_rest_listed(tmp_path, samples_dir, caplog):
    """A local file named in another encoding (`caf\\xe9.jpg`, Latin-1) crashed every scan of its folder (its URI
    cannot be a Parquet string): it is left out with a warning and counted; the other files are listed."""
    import pyarrow as pa

    from jobs.scan.listing import list_objects

    source = tmp_path / "media"
    (source / "good").mkdir(parents=True)
    shutil.copy(samples_dir / "astronaut.jpg", source / "good" / "a.jpg")
    raw = os.fsencode(source)
    for name in (b"/caf\xe9.jpg", b"/notes\xe9.txt"):  # the second is no media: not listed anyway, not counted
        with open(raw + name, "wb") as handle:
            handle.write((samples_dir / "coffee.jpg").read_bytes())
    os.mkdir(raw + b"/d\xe9j\xe0")  # a folder so named: what is in it cannot be scanned either
    shutil.copy(samples_dir / "coffee.jpg", os.fsdecode(raw + b"/d\xe9j\xe0/c.jpg"))
    unlisted: list[str] = []
    with caplog.at_level("WARNING", logger="jobs.scan.listing"):
        entries = list_objects(str(source), {}, unlisted=unlisted)
    assert [e["uri"] for e in entries] == [str(source / "good" / "a.jpg")]
    pa.array([e["uri"] for e in entries])  # what crashed the scan (incremental.work) takes the listing now
    assert unlisted == [f"{source}/caf\\xe9.jpg", f"{source}/d\\xe9j\\xe0/c.jpg"]
    assert "not listed" in caplog.text and "caf\\xe9.jpg" in caplog.text and "not valid UTF-8" in caplog.text
    assert list_objects(str(source), {}, include=("good/*",), unlisted=(filtered := [])) and filtered == []


def test_a_source_that_cannot_be_read_fails_and_a_folder_under_it_is_counted(tmp_path, samples_dir, monkeypatch, caplog):
    """A source folder the scanner may not read reported success with 0 objects, and unreadable folders under it
    vanished without a word. os.scandir is made to refuse (PermissionError) the folders as EACCES would, so this
    runs as root too; the next test has the kernel refuse."""
    from jobs.scan.errors import ScanError, SourceNotFoundError
    from jobs.scan.listing import list_objects

    source = tmp_path / "media"
    (source / "locked" / "deeper").mkdir(parents=True)
    shutil.copy(samples_dir / "astronaut.jpg", source / "a.jpg")
    shutil.copy(samples_dir / "coffee.jpg", source / "locked" / "deeper" / "c.jpg")
    refused = set()
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) in refused:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    refused.add(str(source / "locked"))
    unlisted: list[str] = []
    with caplog.at_level("WARNING", logger="jobs.scan.listing"):
        assert [e["uri"] for e in list_objects(str(source), {}, unlisted=unlisted)] == [str(source / "a.jpg")]
    assert unlisted == [str(source / "locked")] and "cannot read the folder: Permission denied" in caplog.text
    refused.add(str(source))
    with pytest.raises(ScanError, match=r"cannot list source .*: PermissionError: .*Permission denied") as raised:
        list_objects(str(source), {})
    assert not isinstance(raised.value, SourceNotFoundError) and raised.value.code == "scan_error"
    refused.clear()
    with pytest.raises(SourceNotFoundError, match="no such folder"):  # a missing source is still not found
        list_objects(str(tmp_path / "gone"), {})


def test_the_listing_vouches_only_for_what_it_could_see_and_its_filters_keep(tmp_path, monkeypatch):
    """What a scan marks deleted is what its listing's ``Coverage`` covers and did not return. Not covered, so never
    a tombstone: a dangling link to a file (an unmounted volume's clip), a file whose stat was refused (EACCES, as a
    folder listed but not entered gives), what --include or --exclude leave out, what is beside the source."""
    from jobs.scan.listing import Coverage, list_objects

    source = tmp_path / "in"
    source.mkdir()
    for name in ("a.jpg", "refused.jpg"):
        (source / name).write_bytes(b"\xff\xd8\xff")
    (source / "dangling.jpg").symlink_to(tmp_path / "volume" / "dangling.jpg")
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if os.fspath(path) == str(source / "refused.jpg"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    coverage, unlisted = Coverage(), []
    listed = list_objects(str(source), {}, include=("*.jpg",), exclude=("skip*",), unlisted=unlisted, coverage=coverage)
    assert [e["uri"] for e in listed] == [str(source / "a.jpg")] and unlisted == [str(source / "refused.jpg")]
    covered = {name: coverage.covers(f"{source}/{name}")
               for name in ("gone.jpg", "sub/gone.jpg", "dangling.jpg", "refused.jpg", "clip.mp4", "skip.jpg")}
    assert covered == {"gone.jpg": True, "sub/gone.jpg": True, "dangling.jpg": False, "refused.jpg": False,
                       "clip.mp4": False, "skip.jpg": False}
    assert not coverage.covers(f"{tmp_path}/inbox/x.jpg")  # beside `in`, not under it


def _unprivileged() -> list[str] | None:
    """How to run a command that the kernel's permission checks apply to: as it is when not root, else in a user
    namespace of its own (`unshare -U`: root's files are then another user's); None when neither can be had."""
    import subprocess

    if os.geteuid() != 0:
        return []
    try:
        if subprocess.run(["unshare", "-U", "true"], capture_output=True, timeout=30).returncode == 0:
            return ["unshare", "-U"]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return None


def test_folders_and_files_the_kernel_refuses_are_counted_and_an_unreadable_source_fails(samples_dir):
    """The same with a real EACCES: a folder without permissions (chmod 000), a file in a folder that may be listed
    but not entered (chmod 444: its name is seen, its size is not), a source without permissions. Of the names seen
    but not looked at, only those the filters keep are counted: a `notes.txt` or a `--exclude`d file there was
    counted (a readable one is only skipped), an extension-less one when `--ext` admits any name is."""
    import json
    import subprocess
    import sys
    import tempfile

    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root and `unshare -U` is not available: the kernel would refuse nothing")
    top = Path(tempfile.mkdtemp())  # not under pytest's tmp_path: its parents are root's alone (0700)
    try:
        top.chmod(0o755)
        source = top / "media"
        for folder in ("locked", "listed_only"):
            (source / folder).mkdir(parents=True)
            shutil.copy(samples_dir / "coffee.jpg", source / folder / "c.jpg")
        for name in ("notes.txt", "run.log", "skip.jpg", "README"):
            (source / "listed_only" / name).write_text("not media")
        shutil.copy(samples_dir / "astronaut.jpg", source / "a.jpg")
        (source / "locked").chmod(0)
        (source / "listed_only").chmod(0o444)
        code = ("import json, sys\n"
                "from jobs.scan.listing import list_objects\n"
                "unlisted = []\n"
                "filters = json.loads(sys.argv[2])\n"
                "try:\n"
                "    listed = list_objects(sys.argv[1], {}, unlisted=unlisted, **filters)\n"
                "    print(json.dumps([[e['uri'] for e in listed], unlisted]))\n"
                "except Exception as exc:\n"
                "    print(json.dumps([type(exc).__name__, exc.code, str(exc)]))\n")
        root = str(Path(__file__).resolve().parents[3])

        def listing(**filters) -> list:
            done = subprocess.run([*prefix, sys.executable, "-c", code, str(source), json.dumps(filters)],
                                  capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": root},
                                  timeout=120)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout.splitlines()[-1])

        listed_only = source / "listed_only"
        locked = str(source / "locked")
        assert listing(exclude=["skip.*"]) == [[str(source / "a.jpg")], [str(listed_only / "c.jpg"), locked]]
        assert listing(extensions=[".txt"]) == [[], [str(listed_only / "notes.txt"), locked]]
        every = ("README", "c.jpg", "notes.txt", "run.log", "skip.jpg")
        assert sorted(listing(extensions=[])[1]) == [str(listed_only / n) for n in every] + [locked]
        source.chmod(0)
        kind, code_, message = listing()
        assert (kind, code_) == ("ScanError", "scan_error") and "PermissionError" in message
    finally:
        for path in (top / "media", top / "media" / "locked", top / "media" / "listed_only"):  # parents first
            path.chmod(0o755)
        shutil.rmtree(top)


def test_azure_uris_name_the_account_the_listing_connected_to():
    """adlfs's URIs (`abfs://container/key`) leave the storage account out: two accounts' containers of one name
    shared rows and rescanned each other every night. Stand-ins for adlfs's file system (an optional extra); the
    next test lists and reads through adlfs against Azurite where they are installed."""
    from types import SimpleNamespace

    from jobs.scan.listing import object_uri
    from pipeline.logsafe import redact_uri

    class Blob(SimpleNamespace):
        protocol = ("abfs", "az", "abfss")

        def unstrip_protocol(self, path: str) -> str:
            return f"abfs://{path}"

    connected = Blob(service_client=SimpleNamespace(account_name="acct1"), account_name="named")
    uri = object_uri(connected, "media/uploads/a b.jpg")
    assert uri == "abfs://media@acct1.dfs.core.windows.net/uploads/a b.jpg"  # the account it listed, not a name
    assert redact_uri(uri) == uri  # the row keeps container@account: a location, not user-info
    assert object_uri(Blob(account_name="acct2"), "media/x.mp4") == "abfs://media@acct2.dfs.core.windows.net/x.mp4"
    assert object_uri(Blob(), "media/x.mp4") == "abfs://media/x.mp4"  # no account known: fsspec's own
    assert object_uri(SimpleNamespace(protocol="file"), "/m/x.mp4") == "/m/x.mp4"


def test_two_azure_accounts_containers_of_one_name_are_two_sources(azurite, monkeypatch):
    """The same container and key in two accounts: each listing's URI names its account, and reading that URI as
    the scan's workers do (fsspec, the scan's storage options for az://: none; credentials from the environment)
    gives that account's object. An output in each is named with its account too (messages, the run record)."""
    import adlfs
    import fsspec

    from jobs.scan.listing import list_objects
    from jobs.scan.output import OutputStore

    listed = {}
    for name, connection in azurite.items():
        fs = adlfs.AzureBlobFileSystem(connection_string=connection)
        fs.mkdir("media")
        fs.pipe_file("media/uploads/a.jpg", f"{name}'s bytes".encode())
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)  # as a scan of this account is set up
        (entry,) = list_objects("az://media/uploads/", {"connection_string": connection})
        listed[name] = entry["uri"]
        with fsspec.open(entry["uri"], "rb") as handle:  # what a worker reads under that URI
            assert handle.read() == f"{name}'s bytes".encode()
        output = OutputStore("az://media/out/", {"connection_string": connection})
        assert output.display == f"abfs://media@{name}.dfs.core.windows.net/out"
    assert listed == {name: f"abfs://media@{name}.dfs.core.windows.net/uploads/a.jpg" for name in azurite}


def test_a_store_that_refuses_the_listing_is_said_in_one_line(refusing_store):
    """Azure's refusals (an HttpResponseError with its XML body) ran to ten lines in the message, the record and the
    `--json` line; the docs promise one."""
    from jobs.scan.errors import ScanError
    from jobs.scan.listing import list_objects

    with pytest.raises(ScanError) as refused:
        list_objects("refusing://media/uploads", {})
    assert str(refused.value) == f"cannot list source refusing://media/uploads: PermissionError: {refusing_store}"
    with pytest.raises(ScanError) as unopened:
        list_objects("unopenable://media/uploads", {})
    assert str(unopened.value) == ("cannot open source unopenable://media/uploads: ValueError: unable to connect to "
                                   f"account for {refusing_store}")


def test_azure_refusals_are_one_line(azurite):
    """The same against Azurite: a wrong account key, for the source and the output."""
    from jobs.scan.errors import ScanError
    from jobs.scan.listing import list_objects
    from jobs.scan.output import OutputError, OutputStore

    wrong = azurite["acct1"].replace("AccountKey=", "AccountKey=AAAA")
    with pytest.raises(ScanError, match="HttpResponseError") as refused:
        list_objects("az://media/uploads/", {"connection_string": wrong})
    with pytest.raises(OutputError, match="HttpResponseError") as unwritable:
        OutputStore("abfs://media/out", {"connection_string": wrong}).prepare()
    for error in (refused.value, unwritable.value):
        assert "\n" not in str(error) and "authenticate" in str(error)
