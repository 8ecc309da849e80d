"""The ranks and their messages: NumPy or CuPy, the transport, point-to-point, the rank grid, the launcher."""
