"""The web page of `python -m ra_jax.serve`: a starlette app over a
searcher (`Searcher`: a trained work dir and its database index, or
`ExportSearcher`: an export directory; then results have no thumbnails and
there are no test images to pick).

Routes:
  GET  /             the page (page.html: HTML and a little JavaScript, no
                     build step)
  GET  /api/info     classes, query-split size, limits
  POST /api/search   multipart form: `image` (a file) or `query_index`, and
                     `k`, `num_lists`, `exact`; JSON with stage 1's classes
                     and the neighbours (ids, labels, distances, thumbnails)

Bad input is a 4xx JSON {"error": ...} and the server keeps serving: 400 for
a file that is not an image, or k / num_lists / query_index out of range;
413 for an upload over MAX_UPLOAD_BYTES or an image over `max_pixels`.
Uploads are decoded by the search command's decoder (`images.decode_image`).
"""

import importlib.resources
from typing import Optional

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from ra_jax.trained import images
from ra_jax.trained.search import BaseSearcher

MAX_UPLOAD_BYTES = 8 * 2**20
MAX_K = 100


class BadQuery(ValueError):
  """A query the page answers with `status` and this message."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def _integer(form, name: str, default: int, low: int, high: int) -> int:
  raw = form.get(name)
  if raw in (None, ""):
    return default
  try:
    value = int(raw)
  except ValueError:
    raise BadQuery(f"{name} must be an integer, got {raw!r}") from None
  if not low <= value <= high:
    raise BadQuery(f"{name} must be in [{low}, {high}], got {value}")
  return value


def _thumbnail(image) -> Optional[str]:
  return None if image is None else images.data_url(image)


def page_html() -> str:
  return importlib.resources.files("ra_jax.trained").joinpath(
      "page.html").read_text(encoding="utf-8")


def make_app(searcher: BaseSearcher, *,
             max_pixels: int = images.MAX_PIXELS) -> Starlette:
  """The app serving `searcher`'s run; uploads over `max_pixels` pixels
  are refused (413) before they are decoded."""
  num_classes = searcher.num_classes
  k_max = min(MAX_K, len(searcher.index))
  html = page_html()

  async def page(request: Request):
    return HTMLResponse(html)

  async def info(request: Request):
    return JSONResponse({
        "classes": list(searcher.class_names),
        "anchors": num_classes, "queries": len(searcher.queries),
        "k_max": k_max, "channels": searcher.channels,
        "step": searcher.step, "max_upload_bytes": MAX_UPLOAD_BYTES,
        "max_pixels": max_pixels})

  async def search(request: Request):
    try:
      size = int(request.headers.get("content-length") or 0)
      if size > MAX_UPLOAD_BYTES + 2**16:  # before reading the body
        raise BadQuery(f"the request is {size:,} bytes; at most"
                       f" {MAX_UPLOAD_BYTES:,} are accepted", 413)
      form = await request.form(max_part_size=MAX_UPLOAD_BYTES + 1)
      k = _integer(form, "k", 10, 1, k_max)
      exact = form.get("exact") in ("1", "true", "on")
      num_lists = 1 if exact or not num_classes else _integer(
          form, "num_lists", 1, 1, num_classes)
      upload = form.get("image")
      label: Optional[int] = None
      if upload is not None and hasattr(upload, "read"):
        data = await upload.read()
        if len(data) > MAX_UPLOAD_BYTES:
          raise BadQuery(f"the upload is {len(data):,} bytes; at most"
                         f" {MAX_UPLOAD_BYTES:,} are accepted", 413)
        image = searcher.load_image(data, max_pixels=max_pixels,
                                    name="the upload")
      else:
        if not len(searcher.queries):
          raise BadQuery("send an image file (this server has no test"
                         " images)")
        index = _integer(form, "query_index", -1, 0,
                         len(searcher.queries) - 1)
        if index < 0:
          raise BadQuery("send an image file or a query_index")
        image, label = searcher.query_example(index)
      found = await run_in_threadpool(searcher.search, image, k, num_lists,
                                      exact)
    except (BadQuery, images.ImageError) as error:
      return JSONResponse({"error": str(error)}, status_code=error.status)
    return JSONResponse({
        "query": images.data_url(image), "query_label": label,
        "classes": [{"id": c, "name": searcher.class_name(c), "distance": d}
                    for c, d in found["classes"]],
        "exact": exact or not num_classes, "num_lists": num_lists,
        "results": [
            {"rank": rank, "id": int(i), "label": int(l),
             "name": searcher.class_name(int(l)), "distance": float(d),
             "image": _thumbnail(searcher.neighbour_image(i))}
            for rank, (i, l, d) in enumerate(zip(
                found["ids"], found["labels"], found["distances"]), 1)]})

  return Starlette(routes=[Route("/", page), Route("/api/info", info),
                           Route("/api/search", search, methods=["POST"])])
