"""Plan -> train stacked groups -> record probes at checkpoints -> store netCDF."""
