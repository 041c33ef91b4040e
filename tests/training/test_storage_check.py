"""The gs:// preflight against a fake Cloud Storage client: each missing
permission is named with the role that grants it, and the round trip is
tried only when IAM allows it."""

import pytest

from ra_jax.training import storage_check


class _Blob:
  def __init__(self, store, name):
    self.store, self.name = store, name

  def upload_from_string(self, data):
    self.store[self.name] = data

  def download_as_bytes(self):
    return self.store[self.name]

  def delete(self):
    del self.store[self.name]


class _Bucket:
  def __init__(self, granted, store):
    self.granted, self.store = granted, store

  def test_iam_permissions(self, permissions):
    return [p for p in permissions if p in self.granted]

  def blob(self, name):
    return _Blob(self.store, name)


class _Client:
  def __init__(self, granted):
    self.store = {}
    self.granted = granted

  def bucket(self, name):
    assert name == "b"
    return _Bucket(self.granted, self.store)

  def list_blobs(self, bucket, prefix):
    return [_Blob(self.store, n) for n in self.store if n.startswith(prefix)]


def test_object_user_alone_lacks_the_bucket_metadata_orbax_reads():
  object_user = {"storage.objects.create", "storage.objects.get",
                 "storage.objects.list", "storage.objects.delete"}
  found = storage_check.problems("gs://b/runs/x", _Client(object_user))
  assert found == ["gs://b: missing storage.buckets.get (orbax reads the"
                   " bucket's metadata when it lists checkpoint steps);"
                   " granted by roles/storage.legacyBucketReader on the"
                   " bucket"]


def test_every_missing_permission_is_named_with_its_role():
  found = storage_check.problems("gs://b/run", _Client({"storage.objects.get"}))
  assert len(found) == 4
  assert any("missing storage.objects.create" in line and
             "roles/storage.objectUser" in line for line in found)


def test_all_granted_runs_the_round_trip_and_leaves_nothing():
  client = _Client(set(storage_check.NEEDED))
  assert storage_check.problems("gs://b/runs/x", client) == []
  assert client.store == {}  # the probe object is deleted


def test_bad_urls_and_failing_calls_are_one_line():
  with pytest.raises(ValueError, match="not a gs://bucket/path URL"):
    storage_check.problems("/local/dir", _Client(set()))

  class _Broken(_Client):
    def bucket(self, name):
      raise RuntimeError("403 Forbidden")
  assert storage_check.problems("gs://b/x", _Broken(set())) == [
      "gs://b: cannot ask for its permissions (RuntimeError: 403"
      " Forbidden)"]
