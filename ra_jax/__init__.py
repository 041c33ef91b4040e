"""ra_jax: content-based image retrieval with the class anchor margin loss, in JAX.

The library layer (`ra_jax.losses`, `ra_jax.retrieval`, `ra_jax.models`,
`ra_jax.data`) never imports the trainer; import the sub-package you need.
"""

__version__ = "0.1.0"
