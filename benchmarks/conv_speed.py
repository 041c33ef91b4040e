"""Where ResNet training time goes on XLA:CPU: one 3x3 convolution's forward,
input gradient (dx) and filter gradient (dk), at ResNet-18's CIFAR shapes
(batch 128). Also times a filter gradient written as nine shifted matrix
products, the obvious hand-made alternative.

  python benchmarks/conv_speed.py
"""

import statistics
import time

import jax
import jax.numpy as jnp


def conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO",
                                                         "NHWC"))


def filter_grad_by_shifts(x, g):
  """dL/dk as sum over the 9 taps of shifted(x)^T @ g."""
  _, _, _, c = x.shape
  ho, wo = g.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  g2 = g.reshape(-1, g.shape[-1])
  return jnp.stack([
      jnp.stack([xp[:, i:i + ho, j:j + wo, :].reshape(-1, c).T @ g2
                 for j in range(3)]) for i in range(3)])


def median_ms(fn, *args, calls=3, rounds=5):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / calls)
  return 1e3 * statistics.median(times)


def main():
  print(f"# jax {jax.__version__}, batch 128, median ms")
  print("| H=W | C | GFLOP fwd | fwd | dx | dk | dk by 9 shifted GEMMs |")
  print("|---|---|---|---|---|---|---|")
  for size, channels in [(32, 64), (16, 128), (8, 256), (4, 512)]:
    x = jax.random.normal(jax.random.PRNGKey(0), (128, size, size, channels))
    k = 0.05 * jax.random.normal(jax.random.PRNGKey(1),
                                 (3, 3, channels, channels))
    y, vjp = jax.vjp(conv, x, k)
    g = jnp.ones_like(y)
    gflop = 2 * 128 * size * size * channels * channels * 9 / 1e9
    print(f"| {size} | {channels} | {gflop:.1f} |"
          f" {median_ms(jax.jit(conv), x, k):.1f} |"
          f" {median_ms(jax.jit(lambda g: vjp(g)[0]), g):.1f} |"
          f" {median_ms(jax.jit(lambda g: vjp(g)[1]), g):.1f} |"
          f" {median_ms(jax.jit(filter_grad_by_shifts), x, g):.1f} |",
          flush=True)


if __name__ == "__main__":
  main()
