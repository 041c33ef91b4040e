"""Naive float64 NumPy versions of every loss: plain loops over examples and
pairs, written straight from the formulas, to test the vectorised code."""

import math

import numpy as np


def norm(v):
  return math.sqrt(float(np.dot(v, v)))


def class_anchor_margin(e, y, c, margin, min_norm, wr=1.0, wn=1.0, where=None,
                        wp=0.0):
  valid = np.ones(len(e), bool) if where is None else where
  repel = 0.0
  for a in range(len(c)):
    for b in range(len(c)):
      if a != b:
        repel += 0.5 * max(0.0, 2 * margin - norm(c[a] - c[b]))**2
  norm_term = sum(max(0.0, min_norm - norm(c[a])) for a in range(len(c)))
  out = np.zeros(len(e))
  for i in range(len(e)):
    if valid[i]:
      out[i] = (0.5 * norm(e[i] - c[y[i]])**2 + wr * repel + wn * norm_term)
      others = [norm(e[i] - c[k]) for k in range(len(c)) if k != y[i]]
      if others:
        out[i] += wp * 0.5 * max(
            0.0, norm(e[i] - c[y[i]]) + margin - min(others))**2
  return out


def log_softmax_at(z, k):
  m = max(z)
  return z[k] - (m + math.log(sum(math.exp(v - m) for v in z)))


def softmax_cross_entropy(e, y, w, b=None, where=None):
  valid = np.ones(len(e), bool) if where is None else where
  out = np.zeros(len(e))
  for i in range(len(e)):
    if valid[i]:
      z = [float(np.dot(w[k], e[i])) + (0.0 if b is None else b[k])
           for k in range(len(w))]
      out[i] = -log_softmax_at(z, y[i])
  return out


def center(e, y, centers, w, b, weight, where=None):
  valid = np.ones(len(e), bool) if where is None else where
  ce = softmax_cross_entropy(e, y, w, b, where)
  for i in range(len(e)):
    if valid[i]:
      ce[i] += weight * 0.5 * norm(e[i] - centers[y[i]])**2
  return ce


def cosine(u, v):
  nu, nv = norm(u), norm(v)
  return 0.0 if nu == 0 or nv == 0 else float(np.dot(u, v)) / (nu * nv)


def arcface(e, y, w, scale, margin, where=None):
  valid = np.ones(len(e), bool) if where is None else where
  out = np.zeros(len(e))
  for i in range(len(e)):
    if not valid[i]:
      continue
    z = []
    for k in range(len(w)):
      cos = cosine(e[i], w[k])
      if k == y[i]:
        theta = math.acos(min(1.0, max(-1.0, cos)))
        if theta + margin < math.pi:
          cos = math.cos(theta + margin)
        else:
          cos = cos - margin * math.sin(margin)
      z.append(scale * cos)
    out[i] = -log_softmax_at(z, y[i])
  return out


def _dist(e, i, j, squared):
  d = norm(e[i] - e[j])
  return d * d if squared else d


def contrastive(e, y, pos_margin, neg_margin, squared=False, where=None):
  n = len(e)
  valid = np.ones(n, bool) if where is None else where
  out = np.zeros(n)
  for i in range(n):
    if not valid[i]:
      continue
    pulls, pushes = [], []
    for j in range(n):
      if j == i or not valid[j]:
        continue
      d = _dist(e, i, j, squared)
      if y[j] == y[i]:
        pulls.append(max(0.0, d - pos_margin)**2)
      else:
        pushes.append(max(0.0, neg_margin - d)**2)
    out[i] = 0.5 * ((np.mean(pulls) if pulls else 0.0) +
                    (np.mean(pushes) if pushes else 0.0))
  return out


def triplet(e, y, margin, mining, squared=False, where=None):
  n = len(e)
  valid = np.ones(n, bool) if where is None else where
  out = np.zeros(n)
  for a in range(n):
    if not valid[a]:
      continue
    pos = [p for p in range(n) if p != a and valid[p] and y[p] == y[a]]
    neg = [q for q in range(n) if valid[q] and y[q] != y[a]]
    if not pos or not neg:
      continue
    d = {j: _dist(e, a, j, squared) for j in range(n)}
    if mining == "all":
      losses = [max(0.0, d[p] - d[q] + margin) for p in pos for q in neg]
      active = [v for v in losses if v > 0]
      out[a] = sum(losses) / max(1, len(active))
    elif mining == "hard":
      out[a] = max(0.0, max(d[p] for p in pos) - min(d[q] for q in neg) +
                   margin)
    else:
      losses = []
      for p in pos:
        farther = [d[q] for q in neg if d[q] > d[p]]
        chosen = min(farther) if farther else max(d[q] for q in neg)
        losses.append(max(0.0, d[p] - chosen + margin))
      out[a] = np.mean(losses)
  return out


def proxy_anchor(e, y, proxies, scale, margin, where=None):
  n = len(e)
  valid = np.ones(n, bool) if where is None else where
  with_positive, pull, push = 0, 0.0, 0.0
  for c in range(len(proxies)):
    pos = [i for i in range(n) if valid[i] and y[i] == c]
    neg = [i for i in range(n) if valid[i] and y[i] != c]
    if pos:
      with_positive += 1
      pull += math.log1p(
          sum(math.exp(-scale * (cosine(e[i], proxies[c]) - margin))
              for i in pos))
    push += math.log1p(
        sum(math.exp(scale * (cosine(e[i], proxies[c]) + margin)) for i in neg))
  total = pull / max(1, with_positive) + push / len(proxies)
  return np.where(valid, total, 0.0)


def numeric_gradient(f, x, eps=1e-6):
  """Central differences of the scalar f at x (float64 array)."""
  grad = np.zeros_like(x)
  flat, gflat = x.reshape(-1), grad.reshape(-1)
  for k in range(flat.size):
    old = flat[k]
    flat[k] = old + eps
    up = f(x)
    flat[k] = old - eps
    down = f(x)
    flat[k] = old
    gflat[k] = (up - down) / (2 * eps)
  return grad
