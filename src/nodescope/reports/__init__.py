"""Rich panels and matplotlib figures; they read xarray Datasets only, never torch."""
