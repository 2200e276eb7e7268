"""What the tests share that is not a fixture: audio and checkpoint makers, app helpers, and the
scripts and `sitecustomize` hooks they run in child processes. Imported as `tests.support.NAME`
from the repository root (pytest's `pythonpath`); the hooks are files to copy, never imported."""
