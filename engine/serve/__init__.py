"""serve.py: the HTTP service, micro-batching, and the watched folder."""
