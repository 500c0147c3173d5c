"""SLI sources (synthetic load, Prometheus, any probe), objectives and their statistics."""
