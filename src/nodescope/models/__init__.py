"""Stacked MLPs and their losses."""
