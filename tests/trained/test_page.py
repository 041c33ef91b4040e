"""The web page's API, in process (starlette's TestClient): the results are
`ra_jax.search`'s, and bad uploads get a 4xx while the server keeps
serving; uploads are decoded by the search command's decoder."""

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from ra_jax.trained import images, page  # noqa: E402
from ra_jax.trained.search import Searcher  # noqa: E402


def _png(array: np.ndarray, mode: str) -> bytes:
  out = io.BytesIO()
  Image.fromarray(array, mode).save(out, format="PNG")
  return out.getvalue()


@pytest.fixture(scope="module")
def served(shared_digits_run, tmp_path_factory):
  from tests import runs
  workdir = runs.copy_run(shared_digits_run,
                          str(tmp_path_factory.mktemp("serve") / "run"))
  searcher = Searcher(workdir, progress=False)
  return searcher, TestClient(page.make_app(searcher, max_pixels=4096))


def test_the_page_and_its_info(served):
  searcher, client = served
  html = client.get("/")
  assert html.status_code == 200 and '<form id="form">' in html.text
  info = client.get("/api/info").json()
  assert info["classes"] == list(searcher.source.class_names)
  assert info["anchors"] == 10 and info["k_max"] == 100
  assert info["max_pixels"] == 4096


def test_an_upload_gives_the_search_commands_results(served):
  searcher, client = served
  query = searcher.source.splits[searcher.source.query_split][3]
  image = np.asarray(query["image"])
  png = _png(np.squeeze(image).astype(np.uint8), "L")
  for form, exact in (({"k": "7", "num_lists": "2"}, False),
                      ({"k": "5", "exact": "1"}, True)):
    response = client.post("/api/search", data=form,
                           files={"image": ("q.png", png, "image/png")})
    assert response.status_code == 200, response.text
    data = response.json()
    expected = searcher.search(searcher.load_image(png),
                               int(form["k"]), int(form.get("num_lists", 1)),
                               exact)
    assert [r["id"] for r in data["results"]] == list(expected["ids"])
    assert [r["label"] for r in data["results"]] == list(expected["labels"])
    assert len(data["results"]) == int(form["k"])
    assert data["query"].startswith("data:image/png;base64,")
  assert [c["id"] for c in data["classes"]] == [
      c for c, _ in expected["classes"]]


def test_a_test_image_by_index_names_its_label(served):
  searcher, client = served
  response = client.post("/api/search", data={"query_index": "0", "k": "3"})
  assert response.status_code == 200
  label = int(searcher.source.splits[searcher.source.query_split][0]["label"])
  assert response.json()["query_label"] == label


@pytest.mark.parametrize("form,files,status,message", [
    ({}, {"image": ("notes.txt", b"just text", "text/plain")}, 400,
     "not an image file"),
    ({"k": "0"}, {"image": ("q.png", None, "image/png")}, 400,
     "k must be in [1, 100], got 0"),
    ({"k": "ten"}, {"image": ("q.png", None, "image/png")}, 400,
     "k must be an integer"),
    ({"num_lists": "11"}, {"image": ("q.png", None, "image/png")}, 400,
     "num_lists must be in [1, 10]"),
    ({"query_index": "100000"}, {}, 400, "query_index must be in"),
    ({}, {}, 400, "send an image file or a query_index"),
    ({}, {"image": ("big.png", b"0" * (page.MAX_UPLOAD_BYTES + 1),
                    "image/png")}, 413, "at most"),
    # 65 x 64 pixels: over the app's max_pixels (4096), refused from the
    # header before decoding
    ({}, {"image": ("wide.png", "65x64", "image/png")}, 413,
     "65 x 64 pixels; at most 4,096 pixels"),
])
def test_bad_queries_get_a_4xx_and_the_server_keeps_serving(
    served, form, files, status, message):
  _, client = served
  def content(data):
    if data is None:
      return _png(np.zeros((8, 8), np.uint8), "L")
    if isinstance(data, str):  # "WxH": a blank PNG of that size
      width, height = map(int, data.split("x"))
      return _png(np.zeros((height, width), np.uint8), "L")
    return data
  files = {k: (name, content(data), kind)
           for k, (name, data, kind) in files.items()}
  response = client.post("/api/search", data=form, files=files or None)
  assert response.status_code == status
  assert message in response.json()["error"]
  assert client.get("/api/info").status_code == 200


def test_uploads_take_the_models_channels():
  """One decoder for the page and the search command: a grayscale image
  for an RGB model repeats its value in each channel, a colour one for a
  grayscale model is converted to luminance."""
  gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
  as_rgb = images.decode_image(_png(gray, "L"), channels=3)
  assert as_rgb.shape == (8, 8, 3)
  assert (as_rgb == gray[..., None]).all()
  rgb = _png(np.zeros((8, 8, 3), np.uint8), "RGB")
  assert images.decode_image(rgb, channels=3).shape == (8, 8, 3)
  assert images.decode_image(rgb, channels=1).shape == (8, 8, 1)


def test_a_decompression_bomb_is_refused_before_decoding():
  """A PNG of a few kilobytes that declares 20,000 x 20,000 pixels (over
  PIL's own limit) is a 413 naming the limit, never decoded."""
  import zlib
  import struct
  def chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body +
            struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))
  side = 20_000
  row = b"\0" + b"\0" * side  # filter byte + one gray byte per pixel
  bomb = (b"\x89PNG\r\n\x1a\n" +
          chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(row * 16)) + chunk(b"IEND", b""))
  assert len(bomb) < 10_000
  for limit in (images.MAX_PIXELS, 10 * side * side):  # ours, then PIL's
    with pytest.raises(images.ImageError) as error:
      images.decode_image(bomb, channels=1, max_pixels=limit)
    assert error.value.status == 413


def test_an_export_directory_serves_the_same_results(served, tmp_path):
  """The page over an export (what one deploys): the encoder and the
  index from the export directory answer as the work dir does; no test
  images, no thumbnails."""
  from ra_jax.trained import export
  from ra_jax.trained.search import ExportSearcher
  searcher, _ = served
  out = tmp_path / "export"
  export.export_run(searcher.run.workdir, str(out), platforms=("cpu",),
                    faiss=False)
  exported = ExportSearcher(str(out))
  client = TestClient(page.make_app(exported))
  info = client.get("/api/info").json()
  assert info["queries"] == 0 and info["anchors"] == 10
  assert info["classes"] == list(searcher.class_names)
  image, _ = searcher.query_example(7)
  png = _png(np.squeeze(image).astype(np.uint8), "L")
  response = client.post("/api/search", data={"k": "6", "num_lists": "2"},
                         files={"image": ("q.png", png, "image/png")})
  assert response.status_code == 200, response.text
  expected = searcher.search(searcher.load_image(png), 6, 2, False)
  results = response.json()["results"]
  assert [r["id"] for r in results] == list(expected["ids"])
  np.testing.assert_allclose([r["distance"] for r in results],
                             expected["distances"], rtol=1e-4, atol=1e-5)
  assert all(r["image"] is None for r in results)
  missing = client.post("/api/search", data={"query_index": "0"})
  assert missing.status_code == 400
  assert "no test images" in missing.json()["error"]
  with pytest.raises(FileNotFoundError, match="holds no export"):
    ExportSearcher(str(tmp_path))


@pytest.mark.slow
def test_the_serve_command_serves_the_page_over_http(digits_run):
  """python -m ra_jax.serve with uvicorn, queried over a real socket."""
  import json
  import urllib.error
  import urllib.request
  from tests import runs
  with runs.serving(digits_run) as base:
    page = urllib.request.urlopen(base, timeout=5).read().decode()
    assert "ra_jax: query a trained run" in page
    request = urllib.request.Request(
        base + "api/search", data=b"query_index=2&k=4",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    found = json.load(urllib.request.urlopen(request, timeout=60))
    assert len(found["results"]) == 4
    bad = urllib.request.Request(
        base + "api/search", data=b"k=0&query_index=2",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as error:
      urllib.request.urlopen(bad, timeout=60)
    assert error.value.code == 400
