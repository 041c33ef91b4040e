"""Whether this machine's credentials can do, in a gs:// work dir, what
orbax and ra_jax do there — before a run starts on every worker:

  python -m ra_jax.training.storage_check gs://bucket/runs/name

(`launch/tpu_pod.sh check` and `train` run it on worker 0.) It asks Cloud
Storage which of the permissions below the caller holds on the bucket
(`Bucket.test_iam_permissions`, which needs no permission itself), names
each missing one with the role that grants it, then writes, reads, lists
and deletes one small object under the work dir. Exit status 0: all good;
2: a line per problem. Needs the `.[gcs]` extra (google-cloud-storage).
"""

import sys
import uuid
from typing import Any, Optional

# Permission -> what needs it.
NEEDED = {
    "storage.objects.create": "writing checkpoints, metrics and results",
    "storage.objects.get": "reading them back (resuming, evaluating)",
    "storage.objects.list": "finding the checkpoints (orbax lists steps)",
    "storage.objects.delete": "replacing files and removing old checkpoints",
    "storage.buckets.get": "orbax reads the bucket's metadata when it lists"
                           " checkpoint steps",
}
# The predefined role that grants each one (on the bucket): objectUser for
# the objects; it lacks storage.buckets.get, which legacyBucketReader has.
ROLE = {"storage.buckets.get": "roles/storage.legacyBucketReader"}
OBJECTS_ROLE = "roles/storage.objectUser"


def split_url(url: str) -> tuple[str, str]:
  """("bucket", "prefix") of gs://bucket/prefix."""
  if not url.startswith("gs://") or len(url) <= len("gs://"):
    raise ValueError(f"{url}: not a gs://bucket/path URL")
  bucket, _, prefix = url[len("gs://"):].partition("/")
  return bucket, prefix.strip("/")


def problems(url: str, client: Optional[Any] = None) -> list[str]:
  """One line per thing the work dir `url` would fail on; none when the
  caller can do everything ra_jax does there."""
  bucket_name, prefix = split_url(url)
  if client is None:
    try:
      from google.cloud import storage
    except ImportError:
      return ["google-cloud-storage is not installed (pip install"
              " '.[gcs]')"]
    client = storage.Client()
  try:
    bucket = client.bucket(bucket_name)
    granted = set(bucket.test_iam_permissions(list(NEEDED)))
  except Exception as error:  # no such bucket, no credentials, ...
    return [f"gs://{bucket_name}: cannot ask for its permissions"
            f" ({type(error).__name__}: {error})"]
  missing = [p for p in NEEDED if p not in granted]
  if missing:
    return [f"gs://{bucket_name}: missing {p} ({NEEDED[p]}); granted by"
            f" {ROLE.get(p, OBJECTS_ROLE)} on the bucket" for p in missing]
  probe = "/".join(filter(None, (prefix,
                                 f".ra_jax_access_check_{uuid.uuid4().hex}")))
  try:
    blob = bucket.blob(probe)
    blob.upload_from_string(b"ra_jax")
    if blob.download_as_bytes() != b"ra_jax":
      return [f"gs://{bucket_name}/{probe}: read back other bytes than"
              " written"]
    if not any(b.name == probe for b in client.list_blobs(
        bucket_name, prefix=probe)):
      return [f"gs://{bucket_name}/{probe}: written but not listed"]
    blob.delete()
  except Exception as error:
    return [f"gs://{bucket_name}/{probe}: the write, read, list, delete"
            f" round trip failed ({type(error).__name__}: {error})"]
  return []


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
    return 2
  try:
    found = problems(argv[1])
  except ValueError as error:
    found = [str(error)]
  for line in found:
    print(f"storage_check: {line}", file=sys.stderr)
  if not found:
    print(f"storage_check: {argv[1]}: write, read, list, bucket metadata"
          " and delete all work")
  return 2 if found else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
