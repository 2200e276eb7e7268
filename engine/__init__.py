"""nfp's recognition engine: audio → fingerprints → index → matches. No Qt, no training code."""
