"""A library on disk: folder scans, the track database, fingerprint rows and the faiss index."""
