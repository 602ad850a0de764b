"""Data sets: synthetic hierarchical patterns and IDX files (MNIST, Fashion-MNIST)."""
