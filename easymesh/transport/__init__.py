"""The only code that touches sockets: the I/O loop, connections and listeners."""
