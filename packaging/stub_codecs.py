"""Replace FFmpeg's video codec libraries inside a built bundle by small stubs.

PyAV's wheel links libavcodec against video encoders and decoders (x265, x264, SVT-AV1, libvpx,
dav1d: 34 MB of the bundle) that nfp, which only decodes audio, never uses. The dynamic loader
still needs each library and every symbol libavcodec takes from it, so each is replaced by a
stub with the same soname that defines those symbols. Each returns 0 (NULL): libavcodec's codec
registration, which asks some of them for their capabilities when PyAV lists codecs, reads
that as "not available"; nothing else reaches them, as nfp never opens a video codec.

Usage: python packaging/stub_codecs.py dist/nfp-desktop   (needs gcc and binutils' nm/readelf)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

VIDEO_LIBRARIES = ("libx265", "libx264", "libSvtAv1Enc", "libvpx", "libdav1d")
STUB_HEADER = "/* nfp: video codecs are left out of this build (packaging/stub_codecs.py) */\n"


def dynamic_symbols(library: Path, *, defined: bool) -> set[str]:
    flag = "--defined-only" if defined else "--undefined-only"
    out = subprocess.run(["nm", "-D", flag, str(library)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def soname(library: Path) -> str:
    out = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    found = re.search(r"\(SONAME\)\s+Library soname: \[(.+)\]", out)
    if not found:
        raise SystemExit(f"{library}: no soname")
    return found.group(1)


def stub(library: Path, needed: set[str]) -> int:
    """Replace `library` by a stub defining the symbols of `needed` it defines; its size."""
    symbols = sorted(needed & dynamic_symbols(library, defined=True))
    source = STUB_HEADER + "".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols)
    with tempfile.TemporaryDirectory() as tmp:
        c_file = Path(tmp) / "stub.c"
        c_file.write_text(source)
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", f"-Wl,-soname,{soname(library)}",
                        "-o", str(library), str(c_file)], check=True)  # fmt: skip
    return len(symbols)


def main(bundle: Path) -> None:
    codecs = sorted(p for p in bundle.rglob("libavcodec-*.so*") if not p.is_symlink())
    if len(codecs) != 1:
        raise SystemExit(f"{bundle}: expected one libavcodec, found {len(codecs)}")
    needed = dynamic_symbols(codecs[0], defined=False)
    for name in VIDEO_LIBRARIES:
        for library in sorted(codecs[0].parent.glob(f"{name}-*.so*")):
            before = library.stat().st_size
            count = stub(library, needed)
            print(f"{library.name}: {before / 1e6:.1f} MB -> stub of {count} symbols")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
