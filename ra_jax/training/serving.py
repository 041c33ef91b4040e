"""The web page of `python -m ra_jax.serve`: a starlette app over a
`Searcher` (one trained work dir and its database index).

Routes:
  GET  /             the page (HTML + a little JavaScript, no build step)
  GET  /api/info     classes, query-split size, limits
  POST /api/search   multipart form: `image` (a file) or `query_index`, and
                     `k`, `num_lists`, `exact`; JSON with stage 1's classes
                     and the neighbours (ids, labels, distances, thumbnails)

Bad input is a 4xx JSON {"error": ...} and the server keeps serving: 400 for
a file that is not an image, a grayscale image for an RGB model, or k /
num_lists / query_index out of range; 413 for an upload over
MAX_UPLOAD_BYTES.
"""

import base64
import io
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from ra_jax.training import image_search

MAX_UPLOAD_BYTES = 8 * 2**20
MAX_K = 100
_THUMB = 96
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class BadQuery(ValueError):
  """A query the page should answer with `status` and this message."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def decode_upload(data: bytes, channels: int) -> np.ndarray:
  """An uploaded file as uint8 (H, W, channels). A colour image for a
  grayscale model is converted; a grayscale one for an RGB model is an
  error (the model never saw such images)."""
  if len(data) > MAX_UPLOAD_BYTES:
    raise BadQuery(f"the upload is {len(data):,} bytes; at most"
                   f" {MAX_UPLOAD_BYTES:,} are accepted", 413)
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      mode = image.mode
      array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
  except UnidentifiedImageError as error:
    raise BadQuery("not an image file PIL can read") from error
  except (OSError, ValueError) as error:  # truncated or damaged
    raise BadQuery(f"not an image file PIL can read ({error})") from error
  if channels == 3 and mode in _GRAY_MODES:
    raise BadQuery(f"a grayscale image (PIL mode {mode}); this model takes"
                   " RGB images")
  return array[..., None] if array.ndim == 2 else array


def _png(image: np.ndarray) -> str:
  """A data: URL of `image` (uint8, H x W x C) scaled to the thumbnail."""
  pil = Image.fromarray(np.squeeze(np.asarray(image)).astype(np.uint8))
  pil = pil.convert("RGB").resize((_THUMB, _THUMB), Image.NEAREST)
  out = io.BytesIO()
  pil.save(out, format="PNG")
  return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


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


def make_app(searcher: image_search.Searcher) -> Starlette:
  """The app serving `searcher`'s run."""
  channels = searcher.run.exp.image_shape[-1]
  query_split = searcher.source.splits[searcher.source.query_split]
  num_classes = 0 if searcher.anchors is None else len(searcher.anchors)
  k_max = min(MAX_K, len(searcher.index))

  async def page(request: Request):
    return HTMLResponse(PAGE)

  async def info(request: Request):
    return JSONResponse({
        "classes": list(searcher.source.class_names),
        "anchors": num_classes, "queries": len(query_split), "k_max": k_max,
        "channels": channels, "step": searcher.step,
        "max_upload_bytes": MAX_UPLOAD_BYTES})

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
        image = decode_upload(await upload.read(), channels)
      else:
        index = _integer(form, "query_index", -1, 0, len(query_split) - 1)
        if index < 0:
          raise BadQuery("send an image file or a query_index")
        record = query_split[index]
        image, label = np.asarray(record["image"]), int(record["label"])
        image = image[..., None] if image.ndim == 2 else image
      found = await run_in_threadpool(searcher.search, image, k, num_lists,
                                      exact)
    except BadQuery as error:
      return JSONResponse({"error": str(error)}, status_code=error.status)
    return JSONResponse({
        "query": _png(image), "query_label": label,
        "classes": [{"id": c, "name": searcher.class_name(c), "distance": d}
                    for c, d in found["classes"]],
        "exact": exact or not num_classes, "num_lists": num_lists,
        "results": [
            {"rank": rank, "id": int(i), "label": int(l),
             "name": searcher.class_name(int(l)), "distance": float(d),
             "image": _png(searcher.database[int(i)]["image"])}
            for rank, (i, l, d) in enumerate(zip(
                found["ids"], found["labels"], found["distances"]), 1)]})

  return Starlette(routes=[Route("/", page), Route("/api/info", info),
                           Route("/api/search", search, methods=["POST"])])


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>ra_jax search</title>
<style>
 body { font-family: sans-serif; margin: 1.5em; max-width: 70em; }
 form { display: flex; gap: 1em; flex-wrap: wrap; align-items: end; }
 label { display: flex; flex-direction: column; font-size: 0.9em; }
 #error { color: #b00020; min-height: 1.2em; }
 #grid { display: flex; flex-wrap: wrap; gap: 0.6em; }
 figure { margin: 0; text-align: center; font-size: 0.8em; }
 figure img { width: 96px; height: 96px; image-rendering: pixelated;
              border: 2px solid #ccc; }
 figure.same img { border-color: #2e7d32; }
 #query figure { display: inline-block; }
 #query img { width: 128px; height: 128px; image-rendering: pixelated; }
</style></head>
<body>
<h1>ra_jax: query a trained run</h1>
<p id="run"></p>
<form id="form">
 <label>Image <input type="file" id="image" name="image" accept="image/*"></label>
 <label>k <input type="number" id="k" name="k" value="10" min="1"></label>
 <label>lists kept <input type="number" id="num_lists" name="num_lists"
        value="1" min="1"></label>
 <label>exact <input type="checkbox" id="exact" name="exact"></label>
 <button type="submit" id="search">Search</button>
 <button type="button" id="random">Random test image</button>
</form>
<p id="error"></p>
<div id="query"></div>
<ol id="classes"></ol>
<div id="grid"></div>
<script>
let info = null;
const $ = (id) => document.getElementById(id);
fetch("/api/info").then((r) => r.json()).then((i) => {
  info = i;
  $("run").textContent = `step ${i.step}, ${i.classes.length} classes, ` +
      (i.anchors ? "two-stage search over the class anchors"
                 : "exact search (this loss has no anchors)");
  $("k").max = i.k_max;
  $("num_lists").max = Math.max(i.anchors, 1);
});
async function search(extra) {
  const body = new FormData();
  body.append("k", $("k").value);
  body.append("num_lists", $("num_lists").value);
  if ($("exact").checked) body.append("exact", "1");
  for (const [key, value] of Object.entries(extra)) body.append(key, value);
  $("error").textContent = "";
  const response = await fetch("/api/search", {method: "POST", body});
  const data = await response.json();
  if (!response.ok) {
    $("error").textContent = `${response.status}: ${data.error}`;
    $("grid").replaceChildren();
    $("classes").replaceChildren();
    $("query").replaceChildren();
    return;
  }
  show(data);
}
function figure(src, caption, cls) {
  const f = document.createElement("figure");
  if (cls) f.className = cls;
  const img = document.createElement("img");
  img.src = src;
  const c = document.createElement("figcaption");
  c.textContent = caption;
  f.append(img, c);
  return f;
}
function show(data) {
  const q = data.query_label === null ? "query" :
      `query (${info.classes[data.query_label]})`;
  $("query").replaceChildren(figure(data.query, q));
  $("classes").replaceChildren(...data.classes.map((c) => {
    const li = document.createElement("li");
    li.textContent = `${c.name}: anchor distance ${c.distance.toFixed(3)}`;
    return li;
  }));
  $("grid").replaceChildren(...data.results.map((r) => {
    const f = figure(r.image, `${r.name} ${r.distance.toFixed(3)}`,
                     data.query_label === r.label ? "same" : "");
    f.dataset.label = r.label;
    f.dataset.id = r.id;
    return f;
  }));
}
$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("image").files[0];
  if (!file) { $("error").textContent = "choose an image first"; return; }
  search({image: file});
});
$("random").addEventListener("click", () => {
  search({query_index: Math.floor(Math.random() * info.queries)});
});
</script>
</body></html>
"""
