"""Paper aggregates of stored results, one module per probe family; `ds.ns` delegates here."""
