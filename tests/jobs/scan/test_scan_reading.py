"""The scan reads the keys its listing returned as they are (``stage_specs(listed=True)``: DecodeStage's
``literal_uris``), on the local S3 server: S3 keys are literal, so `clip%41.jpg` is not `clipA.jpg` and
`caf%c3%a9.jpg` exists as written. What a user types (`score`, the server) is still normalised by ``read_media_bytes``."""

from __future__ import annotations

import boto3

from jobs.scan.listing import list_objects, storage_options_for
from pipeline.batch import object_column
from pipeline.config import load_settings
from pipeline.graph import stage_specs
from pipeline.media import read_media_bytes


def test_listed_keys_are_read_as_they_are(s3_server, s3_bucket, samples_dir):
    astronaut, coffee = (samples_dir / "astronaut.jpg").read_bytes(), (samples_dir / "coffee.jpg").read_bytes()
    keys = {"uploads/clip%41.jpg": astronaut, "uploads/clipA.jpg": coffee, "uploads/caf%c3%a9.jpg": coffee}
    client = boto3.client("s3", endpoint_url=s3_server["endpoint_url"])
    for key, data in keys.items():
        client.put_object(Bucket=s3_bucket, Key=key, Body=data)
    source = f"s3://{s3_bucket}/uploads"
    options = storage_options_for(source)
    uris = [entry["uri"] for entry in list_objects(source, options)]
    assert uris == sorted(f"s3://{s3_bucket}/{key}" for key in keys)

    (decode,) = stage_specs(load_settings(), "decode", storage_options=options, listed=True)
    out = decode.build()({"uri": object_column(uris)})  # the stage the scan's actors run
    assert [e or None for e in out["error"]] == [None] * 3, list(out["error"])
    shapes = {name: (int(w), int(h)) for name, w, h in zip(uris, out["width"], out["height"])}
    size = {data: shapes[f"s3://{s3_bucket}/{key}"] for key, data in keys.items() if key != "uploads/caf%c3%a9.jpg"}
    assert size[astronaut] != size[coffee]  # each key's own bytes, not its normalised twin's
    assert shapes[f"s3://{s3_bucket}/uploads/caf%c3%a9.jpg"] == size[coffee]

    # a URI a user typed is still normalised (the `score` command and the server rely on it)
    typed = f"S3://{s3_bucket}/uploads/clip%41.jpg"
    assert read_media_bytes(typed, 10**8, options) == coffee
    assert read_media_bytes(f"s3://{s3_bucket}/uploads/clip%41.jpg", 10**8, options, literal=True) == astronaut
