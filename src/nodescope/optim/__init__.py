"""Optimisers over stacked parameters."""
