"""TFDS builders of our own: datasets the TFDS catalogue lacks (Tiny
ImageNet) or cannot build offline (Fashion-MNIST from Debian's files)."""
